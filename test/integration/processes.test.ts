// The real binaries, as a user runs them: bin/bangerd-root and bin/bangerd as processes,
// bin/banger talking to them, and a raw line written with socat.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../../src/log/logger.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { createRpcServer } from '../../src/rpc/server.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const bin = (name: string): string => join(ROOT, 'bin', name);
const built = existsSync(join(ROOT, 'dist/src/cli/main.js'));

async function waitForSocket(path: string, proc: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (existsSync(path)) return;
    if (proc.exitCode !== null) throw new Error(`process exited with ${proc.exitCode}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${path} never appeared`);
}

function banger(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(bin('banger'), args, { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.skipIf(!built)('bin/ processes', () => {
  const tmp = shortTempDir();
  const dsock = join(tmp.dir, 'd.sock');
  const hsock = join(tmp.dir, 'root', 'h.sock');
  const dlog = join(tmp.dir, 'bangerd.log');
  const hlog = join(tmp.dir, 'bangerd-root.log');
  const procs: ChildProcess[] = [];

  beforeAll(async () => {
    const helper = spawn(
      bin('bangerd-root'),
      ['--socket', hsock, '--owner-uid', String(process.getuid!()), '--log-file', hlog],
      {
        stdio: 'ignore',
      },
    );
    procs.push(helper);
    await waitForSocket(hsock, helper);
    const daemon = spawn(
      bin('bangerd'),
      [
        '--socket',
        dsock,
        '--state-dir',
        join(tmp.dir, 'state'),
        '--log-file',
        dlog,
        '--helper-socket',
        hsock,
        '--config',
        '/nonexistent',
      ],
      { stdio: 'ignore' },
    );
    procs.push(daemon);
    await waitForSocket(dsock, daemon);
  });
  afterAll(() => {
    for (const p of procs) p.kill('SIGTERM');
    tmp.cleanup();
  });

  it('banger daemon status reports the daemon and a reachable helper', () => {
    const r = banger(['--socket', dsock, 'daemon', 'status']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^bangerd\s+\d+\.\d+\.\d+/m);
    expect(r.stdout).toMatch(/^helper\s+ok/m);
  });

  it('daemon status --json is machine-readable and BANGER_SOCKET works', () => {
    const r = spawnSync(bin('banger'), ['daemon', 'status', '--json'], {
      encoding: 'utf8',
      env: { ...process.env, BANGER_SOCKET: dsock },
    });
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout) as { socket: string; helper: { reachable: boolean } };
    expect(j.socket).toBe(dsock);
    expect(j.helper.reachable).toBe(true);
  });

  it('the same op id is in both logs', () => {
    banger(['--socket', dsock, 'daemon', 'status']);
    const d = readFileSync(dlog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const h = readFileSync(hlog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const done = d.filter((r) => r.msg === 'rpc completed' && r.method === 'daemon.status').at(-1)!;
    expect(h.some((r) => r.msg === 'helper rpc completed' && r.op_id === done.op_id)).toBe(true);
  });

  it.skipIf(spawnSync('which', ['socat']).status !== 0)(
    'a raw version-2 line written with socat gets bad_version with an op id',
    () => {
      const out = execFileSync('socat', ['-t', '5', '-', `UNIX-CONNECT:${dsock}`], {
        input: '{"version":2,"method":"ping"}\n',
        encoding: 'utf8',
      });
      const r = JSON.parse(out.trim()) as { ok: boolean; error: { code: string; op_id: string } };
      expect(r.ok).toBe(false);
      expect(r.error.code).toBe('bad_version');
      expect(r.error.op_id).toMatch(/^op-[0-9a-f]{6,}$/);
    },
  );

  it('banger ping, banger version', () => {
    expect(banger(['--socket', dsock, 'ping']).stdout).toMatch(/^pong from bangerd/);
    const v = JSON.parse(banger(['--socket', dsock, 'version', '--json']).stdout) as {
      node: string;
      daemon: string;
    };
    expect(v.node).toMatch(/^v24\./);
    expect(v.daemon).toMatch(/\d+\.\d+\.\d+/);
  });

  it('an unreachable daemon is a clear error with its own exit code', () => {
    const r = banger(['--socket', join(tmp.dir, 'nobody-home.sock'), 'daemon', 'status']);
    expect(r.code).toBe(69);
    expect(r.stderr).toMatch(
      /^error: cannot reach .*nobody-home\.sock: nothing is listening there; is bangerd running\?/,
    );
  });
});

describe.skipIf(!built)('CLI error output', () => {
  it('prints "error: <message> (op-…)" and exits with the code chosen for the error', async () => {
    const tmp = shortTempDir();
    const log = createLogger({ name: 'fake', stream: new MemoryLog() });
    const server = createRpcServer({
      log,
      summaryPrefix: 'rpc',
      dispatcher: {
        dispatch: async () => {
          throw new ErrorResponse('not_found', 'vm "ghost" not found');
        },
      },
    });
    const sock = join(tmp.dir, 'f.sock');
    await listenUnix(server, sock);
    try {
      const r = await new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve) => {
        const p = spawn(bin('banger'), ['--socket', sock, 'daemon', 'status']);
        let stderr = '';
        let stdout = '';
        p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        p.on('close', (code) => resolve({ code, stderr, stdout }));
      });
      expect(r.stderr).toMatch(/^error: vm "ghost" not found \(op-[0-9a-f]{6,}\)\n$/);
      expect(r.code).toBe(3);
      const j = await new Promise<string>((resolve) => {
        const p = spawn(bin('banger'), ['--socket', sock, 'daemon', 'status', '--json']);
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.on('close', () => resolve(out));
      });
      const parsed = JSON.parse(j) as {
        ok: boolean;
        exit_code: number;
        error: { code: string; op_id: string };
      };
      expect(parsed).toMatchObject({ ok: false, exit_code: 3, error: { code: 'not_found' } });
      expect(parsed.error.op_id).toMatch(/^op-/);
    } finally {
      server.close();
      tmp.cleanup();
    }
  });
});
