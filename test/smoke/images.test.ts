// Real-VM scenarios of OCI images (issue 13), against what global-setup runs inside the smoke
// namespace: docker-registry on 127.0.0.1:5000 holding minbase:bookworm (a Debian minbase tree,
// no systemd, no sshd: test/fixtures/oci/prepare.sh, pushed by skopeo), and the flat apt
// repository on 127.0.0.1:8787 that the smoke config's [images] apt_sources points the bootable
// step and derived builds at. Every scenario's name starts with its id (`npm run smoke -- -t
// image_pull`); the pulled image is shared (pulled on first use), so the file boots few guests.
import { describe, expect, it } from 'vitest';
import type { Image } from '../../generated/types.gen.ts';
import { preparedFixtures, SMOKE_REGISTRY } from '../fixtures/oci/registry.ts';
import { banger, bangerJson, type CmdResult } from './harness.ts';

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
});
