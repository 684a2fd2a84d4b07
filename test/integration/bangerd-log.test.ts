// bin/bangerd's own log as a user starts it: with --quiet the JSON log goes to the log file only
// (setup.sh sends stderr to a file, which used to get a second copy of every line), and status
// polls leave no info line in it. Needs `npm run build`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { shortTempDir } from '../helpers/tmp.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const built = existsSync(join(ROOT, 'dist/src/daemon/main.js'));

interface Daemon {
  proc: ChildProcess;
  sock: string;
  logFile: string;
  stderr: () => string;
}

describe.skipIf(!built)('bangerd --quiet and its log', () => {
  const tmp = shortTempDir('bgq');
  const config = join(tmp.dir, 'config.toml');
  // No .vm DNS: other test daemons may hold the default port.
  writeFileSync(config, 'dns_port = 0\n');
  const procs: ChildProcess[] = [];
  afterAll(() => {
    for (const p of procs) p.kill('SIGTERM');
    tmp.cleanup();
  });

  async function start(name: string, extra: string[]): Promise<Daemon> {
    const sock = join(tmp.dir, `${name}.sock`);
    const logFile = join(tmp.dir, `${name}.log`);
    const args = ['--socket', sock, '--state-dir', join(tmp.dir, name), '--log-file', logFile];
    const proc = spawn(join(ROOT, 'bin', 'bangerd'), [...args, '--config', config, ...extra], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    procs.push(proc);
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    for (let i = 0; i < 300 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(sock), err).toBe(true);
    return { proc, sock, logFile, stderr: () => err };
  }

  const banger = (d: Daemon, ...args: string[]): { code: number | null; stdout: string } => {
    const r = spawnSync(join(ROOT, 'bin', 'banger'), ['--socket', d.sock, ...args], {
      encoding: 'utf8',
      env: { ...process.env, NO_COLOR: '1' },
      timeout: 30_000,
    });
    return { code: r.status, stdout: r.stdout };
  };

  const records = (d: Daemon): { msg: string; method?: string }[] =>
    readFileSync(d.logFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { msg: string; method?: string });

  it('without --quiet the JSON log also goes to stderr (the systemd journal reads it there)', async () => {
    const d = await start('loud', []);
    // The socket appears just before the line is logged and piped: wait for it (up to 5 s).
    for (let i = 0; i < 100 && !d.stderr().includes('"msg":"bangerd listening"'); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(d.stderr()).toMatch(/"msg":"bangerd listening"/);
    expect(records(d).some((r) => r.msg === 'bangerd listening')).toBe(true);
  }, 30_000);

  it('--quiet: every line in the log file, none on stderr; polls leave no info summary', async () => {
    const d = await start('quiet', ['--quiet']);
    for (let i = 0; i < 3; i++) expect(banger(d, 'ping').code).toBe(0);
    const status = banger(d, 'daemon', 'status');
    expect(status.code).toBe(0);
    // No VM has started, so nothing has probed the accelerator yet: said, not left out.
    expect(status.stdout).toMatch(/^engine {4}qemu.*, accel not chosen yet \(not probed yet: /m);
    await new Promise((r) => setTimeout(r, 200));
    const rs = records(d);
    expect(rs.some((r) => r.msg === 'bangerd listening')).toBe(true);
    const summaries = rs.filter((r) => r.msg === 'rpc completed').map((r) => r.method);
    expect(summaries).toContain('daemon.status');
    expect(summaries).not.toContain('ping');
    expect(d.stderr()).toBe('');
  }, 60_000);
});
