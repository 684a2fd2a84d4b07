// bin/banger kernel catalog / kernel pull as a user runs them: a real daemon in this process
// against a fake Debian archive on 127.0.0.1 (test/helpers/fake-debian-archive.ts). Needs
// `npm run build` first (bin/banger runs dist/).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { startDaemon, type RunningDaemon } from '../../src/daemon/start.ts';
import { BUSYBOX_DEB, FakeDebianArchive, kernelDeb } from '../helpers/fake-debian-archive.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BANGER = join(ROOT, 'bin', 'banger');
const built = existsSync(join(ROOT, 'dist/src/cli/commands/kernel/pull.js'));

function banger(
  args: string[],
  onStderr?: (all: string, kill: (sig: NodeJS.Signals) => void) => void,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(BANGER, args, {
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      onStderr?.(stderr, (sig) => p.kill(sig));
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe.skipIf(!built)('banger kernel catalog / pull', { timeout: 90_000 }, () => {
  const tmp = shortTempDir('bgk');
  const archive = new FakeDebianArchive(join(tmp.dir, 'archive'));
  let daemon: RunningDaemon;
  const sock = join(tmp.dir, 'd.sock');

  beforeAll(async () => {
    archive.publish([
      kernelDeb('6.1.0-57-cloud-amd64', '6.1.192-3'),
      kernelDeb('6.1.0-56-cloud-amd64', '6.1.192-2'),
      {
        package: 'linux-image-cloud-amd64',
        version: '6.1.192-3',
        depends: 'linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)',
      },
      BUSYBOX_DEB,
    ]);
    daemon = await startDaemon({
      socket: sock,
      stateDir: join(tmp.dir, 'state'),
      config: { ...DEFAULT_CONFIG, image_cache_dir: join(tmp.dir, 'cache'), dns_port: 0 },
      helperSocket: undefined,
      logStream: new MemoryLog(),
      kernelAptSources: await archive.start(),
    });
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop('test');
    await archive.stop();
    tmp.cleanup();
  });

  it('catalog: a table with the release, version, flavour, size, aliases and what is pulled', async () => {
    const r = await banger(['--socket', sock, 'kernel', 'catalog']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+VERSION\s+FLAVOUR\s+SIZE\s+ALIASES\s+PULLED$/);
    expect(lines[1]).toMatch(
      /^6\.1\.0-57-cloud-amd64\s+6\.1\.192-3\s+cloud-amd64\s+\d+ B\s+cloud-amd64\s+-$/,
    );
    expect(lines[2]).toMatch(/^6\.1\.0-56-cloud-amd64\s+6\.1\.192-2\s+cloud-amd64\s+\d+ B\s+-$/);
    expect(lines).toHaveLength(3);
  });

  it('pull: steps on stderr, the result on stdout; --json is the RPC result; exit codes of the errors', async () => {
    const r = await banger(['--socket', sock, 'kernel', 'pull', 'cloud-amd64']);
    expect(r.code).toBe(0);
    for (const step of ['resolve', 'download', 'verify', 'extract', 'initramfs', 'record']) {
      expect(r.stderr).toMatch(new RegExp(`^✓ ${step} \\(`, 'm'));
    }
    expect(r.stdout).toMatch(
      /^✓ kernel 6\.1\.0-57-cloud-amd64 \(6\.1\.0-57-cloud-amd64\) from linux-image-6\.1\.0-57-cloud-amd64 6\.1\.192-3\n/,
    );

    const j = await banger([
      '--socket',
      sock,
      'kernel',
      'pull',
      '6.1.0-56-cloud-amd64',
      '--name',
      'older',
      '--json',
    ]);
    expect(j.code).toBe(0);
    expect(j.stderr).toBe('');
    const parsed = JSON.parse(j.stdout) as { kernel: { name: string; version: string }; cached: boolean };
    expect(parsed.kernel).toMatchObject({ name: 'older', version: '6.1.0-56-cloud-amd64' });

    const cat = await banger(['--socket', sock, 'kernel', 'catalog', '--json']);
    const kernels = (JSON.parse(cat.stdout) as { kernels: { name: string; kernels: string[] }[] }).kernels;
    expect(kernels.map((k) => k.kernels)).toEqual([['6.1.0-57-cloud-amd64'], ['older']]);

    const again = await banger(['--socket', sock, 'kernel', 'pull', 'cloud-amd64']);
    expect(again.code).toBe(4);
    expect(again.stderr).toContain('kernel 6.1.0-57-cloud-amd64 already exists (--force replaces it)');

    const missing = await banger(['--socket', sock, 'kernel', 'pull', '6.1.0-58-cloud-amd64']);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('close matches: 6.1.0-57-cloud-amd64');
  });

  it('Ctrl-C during the download cancels the pull: exit 130, the kernel it would replace is kept', async () => {
    archive.debDelayMs = 30_000;
    try {
      let sent = false;
      const r = await banger(['--socket', sock, 'kernel', 'pull', 'cloud-amd64', '--force'], (all, kill) => {
        if (!sent && all.includes('→ download')) {
          sent = true;
          kill('SIGINT');
        }
      });
      expect(sent).toBe(true);
      expect(r.code).toBe(130);
      expect(r.stderr).toContain('kernel pull canceled; its partial files were removed');
      const list = await banger(['--socket', sock, 'kernel', 'list', '--json']);
      expect((JSON.parse(list.stdout) as { name: string }[]).map((k) => k.name)).toEqual([
        '6.1.0-57-cloud-amd64',
        'older',
      ]);
    } finally {
      archive.debDelayMs = 0;
    }
  });
});
