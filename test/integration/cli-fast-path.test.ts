// The CLI's fast path (src/cli/fast-path.ts): `ping`, `version` and `--version` answered without
// oclif must print exactly what oclif prints. Each case runs bin/banger twice, as is and with
// BANGER_NO_FAST_PATH=1 (oclif), against a scripted daemon in this process, and compares exit
// code, stdout and stderr. Also: which modules a command loads (no oclif on the fast path; no
// ajv, pino or daemon code in any command). Needs `npm run build` first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFastFlags } from '../../src/cli/fast-path.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BANGER = join(ROOT, 'bin', 'banger');
const NODE = join(ROOT, '.tools/node/bin/node');
const built = existsSync(join(ROOT, 'dist/src/cli/main.js'));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function banger(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(BANGER, args, {
      env: { ...process.env, NO_COLOR: '1', BANGER_SOCKET: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The round trip time differs between two runs. */
const stable = (r: Run): Run => ({
  ...r,
  stdout: r.stdout.replace(/ in [\d.]+ ms$/m, ' in 0 ms').replace(/"rtt_ms": [\d.]+/, '"rtt_ms": 0'),
});

/** A daemon answering every request with one scripted response line. */
function scripted(
  sock: string,
  answer: (req: { method: string; op_id?: string }) => unknown,
): Promise<Server> {
  const server = createServer((c) => {
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      c.end(`${JSON.stringify(answer(JSON.parse(buf.slice(0, nl)) as { method: string }))}\n`);
    });
    c.on('error', () => undefined);
  });
  return new Promise((resolve) => server.listen(sock, () => resolve(server)));
}

describe('parseFastFlags', () => {
  it('takes --json and --socket once each, and nothing else', () => {
    expect(parseFastFlags([])).toEqual({ json: false, socket: undefined });
    expect(parseFastFlags(['--json', '--socket', '/s'])).toEqual({ json: true, socket: '/s' });
    expect(parseFastFlags(['--socket=/s'])).toEqual({ json: false, socket: '/s' });
    for (const bad of [
      ['--help'],
      ['-h'],
      ['--json', '--json'],
      ['--socket', '/a', '--socket', '/b'],
      ['--socket'],
      ['--socket='],
      ['--socket', '--json'],
      ['extra'],
      ['--sock', '/s'],
    ])
      expect(parseFastFlags(bad), bad.join(' ')).toBeUndefined();
  });
});

describe.skipIf(!built)('the fast path prints what oclif prints', { timeout: 120_000 }, () => {
  const tmp = shortTempDir('bgfast');
  const ok = join(tmp.dir, 'ok.sock');
  const failing = join(tmp.dir, 'err.sock');
  const missing = join(tmp.dir, 'none.sock');
  const servers: Server[] = [];

  beforeAll(async () => {
    servers.push(
      await scripted(ok, (req) => ({
        ok: true,
        result: { pong: true, version: '9.8.7', protocol_version: 1 },
        op_id: req.op_id ?? 'op-0000aa',
      })),
      await scripted(failing, () => ({
        ok: false,
        error: { code: 'conflict', message: 'the daemon is shutting down', op_id: 'op-00c0ffee' },
      })),
    );
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    tmp.cleanup();
  });

  const cases: [string, () => string[], (r: Run) => void][] = [
    [
      '--version',
      () => ['--version'],
      (r) => expect(r.stdout).toMatch(/^banger\/\d+\.\d+\.\d+\S* linux-\w+ node-v/),
    ],
    [
      'ping',
      () => ['ping', '--socket', ok],
      (r) => expect(r.stdout).toMatch(/^pong from bangerd 9\.8\.7 \(protocol 1\) in 0 ms\n$/),
    ],
    [
      'ping --json (hoisted, --socket=)',
      () => ['--json', 'ping', `--socket=${ok}`],
      (r) =>
        expect(JSON.parse(r.stdout)).toEqual({
          pong: true,
          version: '9.8.7',
          protocol_version: 1,
          rtt_ms: 0,
        }),
    ],
    [
      'version',
      () => ['version', '--socket', ok],
      (r) => expect(r.stdout).toMatch(/^banger \S+ \(protocol 1, node v\S+\)\nbangerd 9\.8\.7\n$/),
    ],
    [
      'version --json, no daemon',
      () => ['version', '--json', '--socket', missing],
      (r) => expect(JSON.parse(r.stdout)).not.toHaveProperty('daemon'),
    ],
    [
      'ping, no daemon',
      () => ['ping', '--socket', missing],
      (r) => {
        expect(r.code).toBe(69);
        expect(r.stderr).toMatch(
          /^error: cannot reach .*none\.sock: nothing is listening there; is bangerd running\?/,
        );
      },
    ],
    [
      'ping --json, no daemon',
      () => ['ping', '--json', '--socket', missing],
      (r) =>
        expect(JSON.parse(r.stdout)).toMatchObject({
          ok: false,
          exit_code: 69,
          error: { code: 'unreachable' },
        }),
    ],
    [
      'ping, daemon error',
      () => ['ping', '--socket', failing],
      (r) => {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toBe('error: the daemon is shutting down (op-00c0ffee)\n');
      },
    ],
    [
      'ping --json, daemon error',
      () => ['ping', '--socket', failing, '--json'],
      (r) =>
        expect(JSON.parse(r.stdout)).toMatchObject({
          ok: false,
          error: { code: 'conflict', op_id: 'op-00c0ffee' },
        }),
    ],
  ];

  it.each(cases)('%s', async (_name, args, check) => {
    const [fast, slow] = await Promise.all([banger(args()), banger(args(), { BANGER_NO_FAST_PATH: '1' })]);
    check(stable(fast));
    expect(stable(fast)).toEqual(stable(slow));
  });

  it('the fast path loads no oclif; the oclif path does', async () => {
    const args = ['ping', '--socket', ok];
    const fast = await banger(args, { NODE_DEBUG: 'module' });
    const slow = await banger(args, { NODE_DEBUG: 'module', BANGER_NO_FAST_PATH: '1' });
    expect(fast.code).toBe(0);
    expect(slow.code).toBe(0);
    expect(slow.stderr).toMatch(/node_modules\/@oclif\/core/);
    expect(fast.stderr).not.toMatch(/node_modules\//);
  });
});

describe.skipIf(!built)('what the CLI loads', () => {
  it('no command module imports ajv, pino or the daemon’s code', () => {
    // Import every command oclif's manifest lists, recording each module loaded.
    const manifest = JSON.parse(readFileSync(join(ROOT, 'oclif.manifest.json'), 'utf8')) as {
      commands: Record<string, { relativePath: string[] }>;
    };
    const files = Object.values(manifest.commands).map((c) => join(ROOT, ...c.relativePath));
    expect(files.length).toBeGreaterThan(30);
    const tmp = shortTempDir('bgload');
    const script = join(tmp.dir, 'load.mjs');
    writeFileSync(
      script,
      [
        "import { registerHooks } from 'node:module';",
        'const seen = [];',
        'registerHooks({ load(url, ctx, next) { seen.push(url); return next(url, ctx); } });',
        `for (const f of ${JSON.stringify(files)}) await import(f);`,
        "process.stdout.write(seen.join('\\n'));",
      ].join('\n'),
    );
    const r = spawnSync(NODE, [script], { encoding: 'utf8', timeout: 60_000 });
    tmp.cleanup();
    expect(r.status, r.stderr).toBe(0);
    const loaded = r.stdout.split('\n');
    expect(loaded.some((u) => u.includes('/dist/src/cli/commands/vm/create.js'))).toBe(true);
    // The daemon's config reader (and its TOML parser) is the one piece of the daemon the CLI
    // shares: doctor and system uninstall read the config file.
    const heavy = loaded.filter(
      (u) =>
        /node_modules\/(ajv|pino)\/|\/dist\/src\/daemon\//.test(u) &&
        !u.endsWith('/dist/src/daemon/config.js'),
    );
    expect(heavy).toEqual([]);
  });
});
