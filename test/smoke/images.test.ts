// Real-VM scenarios of OCI images (issue 13), against what global-setup runs inside the smoke
// namespace: docker-registry on 127.0.0.1:5000 holding minbase:bookworm (a Debian minbase tree,
// no systemd, no sshd: test/fixtures/oci/prepare.sh, pushed by skopeo), and the flat apt
// repository on 127.0.0.1:8787 that the smoke config's [images] apt_sources points the bootable
// step and derived builds at. Every scenario's name starts with its id (`npm run smoke -- -t
// image_pull`); the pulled image is shared (pulled on first use), so the file boots few guests.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Image } from '../../generated/types.gen.ts';
import { preparedFixtures, SMOKE_REGISTRY } from '../fixtures/oci/registry.ts';
import { readTarHeaders } from '../fixtures/oci/tar-headers.ts';
import { git, makeTestRepo, type TestRepo } from '../helpers/git-repo.ts';
import { banger, bangerJson, bangerSpawn, inNetns, smokeEnv, type CmdResult } from './harness.ts';

const REF = `${SMOKE_REGISTRY}/minbase:bookworm`;
/** The contract's default name: last path component + tag. */
const NAME = 'minbase-bookworm';
const LONG = 1_800_000;

interface PruneResult {
  dry_run: boolean;
  removed: { digest: string; size_bytes: number }[];
  partials: string[];
  bytes: number;
  kept: number;
}

function out(r: CmdResult): string {
  return `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}

let pulled: Promise<{ pull: CmdResult; image: Image }> | undefined;
/** `banger image pull` of minbase, once per file (the scenarios after the first reuse it). */
function pullMinbase(): Promise<{ pull: CmdResult; image: Image }> {
  pulled ??= (async () => {
    const pull = await banger(['image', 'pull', REF], { timeoutMs: LONG });
    if (pull.code !== 0) throw new Error(`banger image pull ${REF} failed: ${out(pull)}`);
    return { pull, image: await bangerJson<Image>(['image', 'show', NAME]) };
  })();
  return pulled;
}

describe('images', () => {
  it('image_pull: banger image pull of minbase from the loopback registry shows its steps, records an oci image, and it boots', async () => {
    const fixtures = preparedFixtures();
    expect(fixtures, 'global-setup prepares the OCI fixtures').toBeDefined();
    const { pull, image } = await pullMinbase();
    // Plain progress on stderr (not a terminal): one line per step transition.
    expect(pull.stderr).toMatch(/\bresolve\b/);
    expect(pull.stderr).toMatch(/\bdownload (started|done)/);
    expect(pull.stderr).toMatch(/\bbootable (started|done)/);
    expect(image).toMatchObject({
      name: NAME,
      source: 'oci',
      reference: REF,
      digest: fixtures!.summary.minbase.digest,
    });
    // minbase has neither systemd nor sshd: booting and running a command over ssh shows the
    // bootable step installed them (from the fixtures' apt repository).
    const r = await banger(
      ['vm', 'run', '--image', NAME, '--rm', '--', 'sh', '-c', 'test -f /etc/debian_version && id -u'],
      { timeoutMs: LONG },
    );
    expect(r.code, out(r)).toBe(0);
    expect(r.stdout).toMatch(/^0$/m);
  });

  it('image_derived: image build --from the pulled image with --packages python3 runs python3; the same build again is a cache hit', async () => {
    await pullMinbase();
    const argv = ['image', 'build', 'py', '--from', NAME, '--packages', 'python3'];
    const b = await banger(argv, { timeoutMs: LONG });
    expect(b.code, out(b)).toBe(0);
    const py = await bangerJson<Image>(['image', 'show', 'py']);
    expect(py).toMatchObject({ name: 'py', source: 'derived', parent: NAME });

    const r = await banger(['vm', 'run', '--image', 'py', '--rm', '--', 'python3', '-c', 'print(6*7)'], {
      timeoutMs: LONG,
    });
    expect(r.code, out(r)).toBe(0);
    expect(r.stdout).toMatch(/^42$/m);

    // Same base, same packages: nothing is rebuilt (a real build boots a prepare VM: minutes).
    const t0 = Date.now();
    const again = await banger(argv, { timeoutMs: LONG });
    expect(again.code, out(again)).toBe(0);
    expect(Date.now() - t0).toBeLessThan(30_000);
    const py2 = await bangerJson<Image>(['image', 'show', 'py']);
    expect(py2.id).toBe(py.id);
    expect(py2.created_at).toBe(py.created_at);
    expect(py2.recipe_hash).toBe(py.recipe_hash);
  });

  it('image_cache_prune: image cache prune --dry-run --json lists what it would remove and keeps the pulled image blobs', async () => {
    const { image } = await pullMinbase();
    const fixtures = preparedFixtures()!;
    const r = await bangerJson<PruneResult>(['image', 'cache', 'prune', '--dry-run']);
    expect(r.dry_run).toBe(true);
    expect(Array.isArray(r.removed)).toBe(true);
    expect(Array.isArray(r.partials)).toBe(true);
    expect(r.bytes).toBe(r.removed.reduce((n, b) => n + b.size_bytes, 0));
    // minbase's manifest, config and layer are in use.
    expect(r.kept).toBeGreaterThanOrEqual(3);
    const removed = r.removed.map((b) => b.digest);
    expect(removed).not.toContain(image.digest);
    for (const layer of fixtures.summary.minbase.layers) expect(removed).not.toContain(layer);
    // A dry run removed nothing: the image is still there.
    expect((await bangerJson<Image>(['image', 'show', NAME])).digest).toBe(image.digest);
  });

  it('image_stat: in a booted guest of the pulled minbase, every file, link and hard link of its tar under / (but /etc, /var and the other trees boot or the bootable step write) has the mode, owner, size, mtime and target of its tar header', async () => {
    const { image } = await pullMinbase();
    const fixtures = preparedFixtures()!;
    const r = await banger(
      [
        'vm',
        'run',
        '--image',
        image.name,
        '--rm',
        '--',
        'find',
        '/',
        '-xdev',
        '(',
        '-path',
        '/proc',
        '-o',
        '-path',
        '/sys',
        '-o',
        '-path',
        '/dev',
        '-o',
        '-path',
        '/run',
        ')',
        '-prune',
        '-o',
        '-printf',
        '%p\\t%y\\t%m\\t%U\\t%G\\t%s\\t%T@\\t%i\\t%l\\n',
      ],
      { timeoutMs: LONG },
    );
    expect(r.code, out(r)).toBe(0);
    const guest = new Map<string, string[]>();
    for (const line of r.stdout.split('\n')) {
      const f = line.split('\t');
      if (f.length === 9) guest.set(f[0]!, f);
    }
    // Trees the boot (seed, machine-id, logs) or the bootable step (apt, dpkg, guest bits) write.
    const mutable = /^\/(etc|var|tmp|root|home|run|boot|dev|proc|sys|mnt|media)(\/|$)/;
    const headers = readTarHeaders(fixtures.minbaseTarGz);
    const byPath = new Map(headers.map((h) => [h.path, h]));
    const mismatches: string[] = [];
    let checked = 0;
    for (const h of headers) {
      if (h.type === 'dir' || mutable.test(h.path) || h.path === '/') continue;
      const g = guest.get(h.path);
      if (!g) {
        mismatches.push(`${h.path}: missing in the guest`);
        continue;
      }
      const [, type, mode, uid, gid, size, mtime, inode, link] = g;
      const want = h.type === 'symlink' ? 'l' : h.type === 'hardlink' || h.type === 'file' ? 'f' : h.type;
      const diffs: string[] = [];
      if (type !== want) diffs.push(`type ${type} != ${want}`);
      if (h.type !== 'symlink' && parseInt(mode!, 8) !== h.mode)
        diffs.push(`mode ${mode} != ${h.mode.toString(8)}`);
      if (Number(uid) !== h.uid || Number(gid) !== h.gid)
        diffs.push(`owner ${uid}:${gid} != ${h.uid}:${h.gid}`);
      if (h.type === 'file' && Number(size) !== h.size) diffs.push(`size ${size} != ${h.size}`);
      if (h.type !== 'hardlink' && Math.floor(Number(mtime)) !== h.mtime)
        diffs.push(`mtime ${mtime} != ${h.mtime}`);
      if (h.type === 'symlink' && link !== h.linkname) diffs.push(`target ${link} != ${h.linkname}`);
      if (h.type === 'hardlink') {
        const target = guest.get(h.linkname);
        if (!target || target[7] !== inode || !byPath.has(h.linkname))
          diffs.push(`not a hard link of ${h.linkname}`);
      }
      if (diffs.length > 0) mismatches.push(`${h.path}: ${diffs.join(', ')}`);
      checked++;
    }
    expect(mismatches.slice(0, 20)).toEqual([]);
    // The comparison covered the bulk of the image (usr-merged minbase: thousands of entries).
    expect(checked).toBeGreaterThan(2000);
  });

  it('image_devcontainer: vm run of a repo with a devcontainer.json (image from the registry, containerEnv, workspaceFolder, postCreateCommand, forwardPorts) runs its python3 -m unittest', async () => {
    const repo = devcontainerRepo();
    const run = bangerSpawn(['vm', 'run', repo.dir, '--rm', '--', 'sh', './check.sh']);
    // forwardPorts: the CLI forwards 127.0.0.1:PORT on the host (inside the namespace) to the
    // guest's 8000, where serve.py answers once; check.sh runs the unit tests first.
    await run.waitFor(/forwarding 127\.0\.0\.1:\d+ → guest localhost:8000/, LONG);
    const seen = /forwarding 127\.0\.0\.1:(\d+) → guest localhost:8000/.exec(run.output().stderr);
    const port = Number(seen![1]);
    let body = '';
    for (let i = 0; i < 120 && !body.includes('banger-forward-ok'); i++) {
      const c = await inNetns(smokeEnv().netns, [
        'curl',
        '-s',
        '--max-time',
        '5',
        `http://127.0.0.1:${port}/`,
      ]);
      body = c.stdout;
      if (!body.includes('banger-forward-ok')) await new Promise((r) => setTimeout(r, 1000));
    }
    const r = await run.done;
    expect(r.code, out(r)).toBe(0);
    expect(body).toContain('banger-forward-ok');
    // Unsupported keys are named in one warning line.
    expect(r.stderr).toMatch(/features/);
    // postCreateCommand ran (its output is streamed with a prefix) before the command.
    expect(r.stderr).toMatch(/post-create ran/);
    expect(r.stdout).toMatch(/^marker=yes$/m);
    expect(r.stdout).toMatch(/^greeting=hello from devcontainer$/m);
    expect(r.stdout).toMatch(/^pwd=\/workspaces\/proj$/m);
    // python3 -m unittest prints its summary on stderr.
    expect(r.stdout + r.stderr).toMatch(/Ran 2 tests[\s\S]*\bOK\b/);
    // The devcontainer's image was pulled by reference (the second run would find it locally).
    const images = await bangerJson<Image[]>(['image', 'list']);
    expect(images.some((i) => i.reference === `${SMOKE_REGISTRY}/python:bookworm`)).toBe(true);
  });
});

const repos: TestRepo[] = [];
afterAll(() => {
  for (const r of repos) r.cleanup();
});

/** A committed repository declaring its toolchain in .devcontainer/devcontainer.json (JSONC). */
function devcontainerRepo(): TestRepo {
  const r = makeTestRepo('bsmoke-dc');
  chmodSync(dirname(r.dir), 0o755);
  repos.push(r);
  mkdirSync(join(r.dir, '.devcontainer'));
  writeFileSync(
    join(r.dir, '.devcontainer', 'devcontainer.json'),
    `// the project's toolchain: python3 from the loopback registry
{
  "name": "proj",
  "image": "${SMOKE_REGISTRY}/python:bookworm",
  "containerEnv": { "GREETING": "hello from devcontainer" },
  "workspaceFolder": "/workspaces/proj",
  "postCreateCommand": "touch /tmp/postcreate-marker && echo post-create ran",
  "forwardPorts": [8000],
  "features": {}, // not supported yet: named in the warning line
}
`,
  );
  writeFileSync(
    join(r.dir, 'test_proj.py'),
    `import unittest


class T(unittest.TestCase):
    def test_math(self):
        self.assertEqual(6 * 7, 42)

    def test_env(self):
        import os
        self.assertEqual(os.environ.get("GREETING"), "hello from devcontainer")


if __name__ == "__main__":
    unittest.main()
`,
  );
  writeFileSync(
    join(r.dir, 'serve.py'),
    `# Answers one HTTP request on port 8000 (what forwardPorts forwards), then exits.
import http.server, socketserver


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"banger-forward-ok\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


socketserver.TCPServer.allow_reuse_address = True
with socketserver.TCPServer(("127.0.0.1", 8000), H) as s:
    s.timeout = 300
    s.handle_request()
`,
  );
  writeFileSync(
    join(r.dir, 'check.sh'),
    `set -e
echo "marker=$(test -f /tmp/postcreate-marker && echo yes || echo no)"
echo "greeting=$GREETING"
echo "pwd=$(pwd)"
python3 -m unittest -v
python3 serve.py
`,
  );
  git(r.dir, 'add', '-A');
  git(r.dir, 'commit', '-q', '-m', 'devcontainer');
  return r;
}
