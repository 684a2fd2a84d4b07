// `banger vm run PATH` with a devcontainer.json, as a user runs it (bin/banger), against a small
// scripted daemon in this process and a fake ssh that runs the remote lines in a local sh (with
// stubs for runuser, useradd, id and chown) and holds -L forwards with a tiny server. What is
// checked: the pull, the image and workspace folder passed on, the lifecycle output and exit
// code, the environment and user of the command, the forwarded port reachable from the host.
// Needs `npm run build` first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Image, Operation, Vm } from '../../generated/types.gen.ts';
import { createLogger } from '../../src/log/logger.ts';
import type { HandlerResponse } from '../../src/rpc/envelope.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { createRpcServer } from '../../src/rpc/server.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';
import { fakeImage, fakeVm } from './cli-fake-daemon.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BANGER = process.env.BANGER_BIN ?? join(ROOT, 'bin', 'banger');
const built = existsSync(join(BANGER, '..', '..', 'dist/src/cli/commands/vm/run.js'));
const T = '2026-01-14T09:31:02.120Z';

function done(kind: string, method: string, id: string): Operation {
  return { id, kind, method, state: 'succeeded', started_at: T, ended_at: T, steps: [] } as Operation;
}

/** A daemon answering what vm run calls, recording every call. */
async function scriptedDaemon(dir: string) {
  const calls: { method: string; params: Record<string, unknown> }[] = [];
  const images = new Map<string, Image>([['debian-bookworm', fakeImage('debian-bookworm')]]);
  const vms = new Map<string, Vm>();
  const pulled: Image = fakeImage('py-3', {
    default: false,
    source: 'oci',
    reference: '127.0.0.1:5000/test/py:3',
    oci_config: {
      env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'LANG=C.UTF-8'],
      working_dir: '/',
      user: 'nobody',
    },
  } as Partial<Image>);
  const handlers: Record<string, (p: Record<string, unknown>) => unknown> = {
    'image.list': () => ({ images: [...images.values()] }),
    'image.show': (p) => {
      const i = images.get(p.name as string);
      if (!i) throw Object.assign(new Error(`image "${String(p.name)}" not found`), { code: 'not_found' });
      return { image: i };
    },
    'image.pull.begin': () => ({ operation_id: 'op-pull01', name: 'py-3' }),
    'image.pull.status': () => {
      images.set('py-3', pulled);
      return { operation: done('image.pull', 'image.pull.begin', 'op-pull01'), image: pulled };
    },
    'vm.create.plan': (p) => ({
      name: (p.name as string | undefined) ?? 'calm-otter',
      name_generated: p.name === undefined,
      image: (p.image as string | undefined) ?? 'debian-bookworm',
      image_ready: true,
      vcpus: 2,
      memory_mib: 1024,
      disk_size_bytes: 4 * 1024 ** 3,
      network: 'user',
      nat: false,
      egress: { mode: 'all', rules: [] },
    }),
    'vm.create.begin': (p) => {
      const name = p.name as string;
      vms.set(name, fakeVm(name, { image: (p.image as string | undefined) ?? 'debian-bookworm' }));
      return { operation_id: 'op-create1', name };
    },
    'vm.create.status': () => ({
      operation: done('vm.create', 'vm.create.begin', 'op-create1'),
      vm: [...vms.values()].at(-1),
    }),
    'vm.workspace.prepare': (p) => ({
      workspace: {
        host_path: p.path,
        guest_path: (p.guest_path as string | undefined) ?? '/root/repo',
        mode: 'tracked',
        include_untracked: false,
        base_commit: 'a'.repeat(40),
        files: 2,
        bytes: 100,
        prepared_at: T,
      },
    }),
    'vm.ssh': (p) => ({
      name: p.name,
      host: '127.0.0.1',
      port: 42022,
      user: 'root',
      identity_file: '/state/ssh/id_ed25519',
      known_hosts_file: '/state/ssh/known_hosts',
      host_key_alias: `${String(p.name)}.vm`,
      ssh_options: ['StrictHostKeyChecking=yes'],
    }),
    'vm.show': (p) => ({ vm: vms.get(p.name as string) }),
    'vm.delete': (p) => {
      vms.delete(p.name as string);
      return { name: p.name, deleted: true };
    },
  };
  const server: Server = createRpcServer({
    log: createLogger({ name: 'fake-bangerd', stream: new MemoryLog() }),
    summaryPrefix: 'rpc',
    dispatcher: {
      async dispatch(_ctx, req): Promise<HandlerResponse> {
        const params = (req.params ?? {}) as Record<string, unknown>;
        calls.push({ method: req.method, params });
        const h = handlers[req.method];
        if (!h)
          return { ok: false, error: { code: 'operation_failed', message: `${req.method} not scripted` } };
        try {
          return { ok: true, result: h(params) };
        } catch (e) {
          const code = (e as { code?: string }).code === 'not_found' ? 'not_found' : 'operation_failed';
          return { ok: false, error: { code, message: (e as Error).message } };
        }
      },
    },
  });
  const sockets = new Set<Socket>();
  server.on('connection', (c: Socket) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
  });
  const sock = join(dir, 'fake.sock');
  await listenUnix(server, sock);
  return {
    sock,
    calls,
    images,
    vms,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const c of sockets) c.destroy();
      }),
  };
}

function banger(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(BANGER, args, {
      env: { ...process.env, NO_COLOR: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe.skipIf(!built)('vm run with a devcontainer.json', { timeout: 120_000 }, () => {
  const tmp = shortTempDir('bgdc');
  let d: Awaited<ReturnType<typeof scriptedDaemon>>;
  let env: NodeJS.ProcessEnv;
  let repo: string;
  let ws: string;
  let sshLog: string;
  let stubLog: string;
  let port: number;

  beforeAll(async () => {
    d = await scriptedDaemon(tmp.dir);
    const bin = join(tmp.dir, 'bin');
    const stubs = join(tmp.dir, 'stubs');
    mkdirSync(bin);
    mkdirSync(stubs);
    sshLog = join(tmp.dir, 'ssh.log');
    stubLog = join(tmp.dir, 'stubs.log');
    // The fake ssh: a -N -L forward serves "forwarded" on the host port until killed; anything
    // else runs the remote line in sh, as sshd hands it to the login shell.
    writeFileSync(
      join(bin, 'ssh'),
      `#!${process.execPath}
const fs = require('node:fs');
const argv = process.argv.slice(2);
fs.appendFileSync(${JSON.stringify(sshLog)}, JSON.stringify(argv) + '\\n');
if (argv.includes('-N')) {
  const [, hostPort] = argv[argv.indexOf('-L') + 1].split(':');
  const srv = require('node:net').createServer((c) => c.end('forwarded\\n'));
  srv.on('error', (e) => fs.appendFileSync(${JSON.stringify(sshLog + '.err')}, 'listen error ' + e.code + '\\n'));
  srv.listen(Number(hostPort), '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0));
} else {
  const line = argv.slice(argv.indexOf('--') + 2).join(' ');
  const r = require('node:child_process').spawnSync('sh', ['-c', line], {
    stdio: 'inherit',
    env: { ...process.env, PATH: ${JSON.stringify(stubs)} + ':' + process.env.PATH },
  });
  process.exit(r.status ?? 255);
}
`,
    );
    chmodSync(join(bin, 'ssh'), 0o755);
    const stub = (name: string, body: string): void => {
      writeFileSync(join(stubs, name), `#!/bin/sh\necho "${name} $*" >>${stubLog}\n${body}\n`);
      chmodSync(join(stubs, name), 0o755);
    };
    stub('runuser', 'while [ "$1" != "--" ]; do shift; done; shift; exec "$@"');
    stub('id', 'exit 1');
    stub('useradd', 'exit 0');
    stub('chown', 'exit 0');

    repo = join(tmp.dir, 'app');
    ws = join(tmp.dir, 'ws');
    mkdirSync(join(repo, '.devcontainer'), { recursive: true });
    mkdirSync(ws);
    port = await freePort();
    writeFileSync(
      join(repo, '.devcontainer', 'devcontainer.json'),
      `{
  // JSONC, as the devcontainers CLI reads it
  "image": "127.0.0.1:5000/test/py:3",
  "containerEnv": { "GREETING": "hi there" },
  "remoteEnv": { "SHOUT": "\${containerEnv:GREETING}!", "FROM_HOST": "\${localEnv:DC_TEST_VAR}" },
  "remoteUser": "dev",
  "workspaceFolder": ${JSON.stringify(ws)},
  "postCreateCommand": { "marker": "echo made > marker.txt", "two": ["echo", "second"] },
  "postStartCommand": "echo started",
  "forwardPorts": [${port}],
  "features": {},
  "runArgs": ["--privileged"],
  "customizations": {},
}
`,
    );
    writeFileSync(join(repo, 'README'), 'x\n');
    execFileSync('git', ['init', '-q', repo]);
    execFileSync('git', ['-C', repo, 'add', '.']);
    execFileSync('git', ['-C', repo, '-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-qm', 'init']);
    env = { PATH: `${bin}:${process.env.PATH ?? ''}`, DC_TEST_VAR: 'from the host' };
  });
  afterAll(async () => {
    await d.close();
    tmp.cleanup();
  });

  it('pulls the image, copies to workspaceFolder, runs the lifecycle, then the command as remoteUser with the env and the port forwarded', async () => {
    // Retries a refused connect (a loaded machine) and prints why it gave up, so a failure says what
    // the forward did instead of only missing "forwarded".
    const probe = `const go = (n) => require('net').connect(${port}, '127.0.0.1').on('data', (b) => process.stdout.write(b)).on('error', (e) => n > 0 ? setTimeout(() => go(n - 1), 200) : process.stdout.write('probe: ' + e.code + String.fromCharCode(10))); go(10)`;
    const r = await banger(
      [
        '--socket',
        d.sock,
        'vm',
        'run',
        repo,
        '--rm',
        '--',
        'sh',
        '-c',
        `echo "$GREETING|$SHOUT|$FROM_HOST|$LANG|$PWD"; cat marker.txt; ${process.execPath} -e "${probe}"`,
      ],
      env,
    );
    expect(r.stderr).toContain(
      `devcontainer: ${join(repo, '.devcontainer', 'devcontainer.json')}, image 127.0.0.1:5000/test/py:3, workspace ${ws}`,
    );
    expect(r.stderr).toMatch(/not supported yet, ignored: "features", "runArgs" \(/);
    expect(r.stderr).not.toContain('"customizations"');
    expect(r.stderr).toContain('pulled 127.0.0.1:5000/test/py:3 as image py-3');
    expect(r.stderr).toContain('[postCreateCommand:marker] $ echo made > marker.txt');
    expect(r.stderr).toContain('[postCreateCommand:two] second');
    expect(r.stderr).toContain('[postStartCommand] started');
    expect(r.stderr).toContain(`forwarding 127.0.0.1:${port} → guest localhost:${port}`);
    expect(r.stdout).toBe(`hi there|hi there!|from the host|C.UTF-8|${ws}\nmade\nforwarded\n`);
    expect(r.code).toBe(0);

    const methods = d.calls.map((c) => c.method);
    expect(methods).toContain('image.pull.begin');
    expect(d.calls.find((c) => c.method === 'image.pull.begin')?.params).toEqual({
      reference: '127.0.0.1:5000/test/py:3',
    });
    expect(d.calls.find((c) => c.method === 'vm.create.begin')?.params).toMatchObject({ image: 'py-3' });
    expect(d.calls.find((c) => c.method === 'vm.workspace.prepare')?.params).toMatchObject({
      guest_path: ws,
    });
    expect(methods.at(-1)).toBe('vm.delete');

    const stubs = readFileSync(stubLog, 'utf8');
    expect(stubs).toContain('useradd -m -s');
    expect(stubs).toContain(`chown -R dev: ${ws}`);
    expect(stubs).toContain('runuser -u dev --');
    // the forward's ssh holds -L on 127.0.0.1 and runs nothing
    const fwd = readFileSync(sshLog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as string[])
      .find((a) => a.includes('-N'));
    expect(fwd?.[fwd.indexOf('-L') + 1]).toBe(`127.0.0.1:${port}:localhost:${port}`);
  });

  it('a failing lifecycle command ends the run with its exit code; the command does not run', async () => {
    const repo2 = join(tmp.dir, 'app2');
    mkdirSync(repo2);
    writeFileSync(
      join(repo2, '.devcontainer.json'),
      `{"workspaceFolder": ${JSON.stringify(ws)}, "onCreateCommand": "echo boom; exit 7"}`,
    );
    execFileSync('git', ['init', '-q', repo2]);
    execFileSync('git', ['-C', repo2, 'add', '.']);
    execFileSync('git', ['-C', repo2, '-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-qm', 'init']);
    d.calls.length = 0;
    const r = await banger(['--socket', d.sock, 'vm', 'run', repo2, '--rm', '--', 'echo', 'never'], env);
    expect(r.code).toBe(7);
    expect(r.stderr).toContain('[onCreateCommand] boom');
    expect(r.stderr).toContain('onCreateCommand failed with exit code 7; its output is above');
    expect(r.stdout).not.toContain('never');
    expect(d.calls.map((c) => c.method).at(-1)).toBe('vm.delete');
    // no image named: the default one, nothing pulled
    expect(d.calls.some((c) => c.method === 'image.pull.begin')).toBe(false);

    // --no-devcontainer: the plain run, in /root/repo
    d.calls.length = 0;
    const plain = await banger(
      ['--socket', d.sock, 'vm', 'run', repo2, '--rm', '--no-devcontainer', '--', 'true'],
      env,
    );
    expect(plain.stderr).not.toContain('devcontainer:');
    expect(d.calls.find((c) => c.method === 'vm.workspace.prepare')?.params).not.toHaveProperty('guest_path');
    const last = readFileSync(sshLog, 'utf8').trim().split('\n').at(-1)!;
    expect((JSON.parse(last) as string[]).at(-1)).toBe('cd /root/repo && true');
  });

  it('--dry-run names the pull, the lifecycle and the forwards; --image overrides the file with a note', async () => {
    d.images.delete('py-3');
    const r = await banger(['--socket', d.sock, 'vm', 'run', repo, '--dry-run', '--', 'make'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('pull 127.0.0.1:5000/test/py:3 as image py-3');
    expect(r.stdout).toContain(
      'run postCreateCommand (2 in parallel): marker: echo made > marker.txt | two: echo second',
    );
    expect(r.stdout).toContain(`run make in ${ws} as dev and exit with its exit code`);
    const o = await banger(
      ['--socket', d.sock, 'vm', 'run', repo, '--dry-run', '--image', 'debian-bookworm'],
      env,
    );
    expect(o.stderr).toContain('note: --image debian-bookworm overrides the image of');
    expect(o.stdout).not.toContain('pull ');
  });
  it('vm exec and vm ssh apply the image config: Env, User, WorkingDir (the workspace wins)', async () => {
    d.images.set(
      'cfg-img',
      fakeImage('cfg-img', {
        default: false,
        oci_config: { env: ['A=1 2', 'PATH=/opt/bin:/usr/bin:/bin'], working_dir: '/srv', user: 'app' },
      } as Partial<Image>),
    );
    d.vms.set('cfg-vm', fakeVm('cfg-vm', { image: 'cfg-img' }));
    const e = await banger(['--socket', d.sock, 'vm', 'exec', 'cfg-vm', '--json', '--', 'ls', '-l'], env);
    expect(e.code).toBe(0);
    const ej = JSON.parse(e.stdout) as { argv: string[]; cwd: string };
    expect(ej.cwd).toBe('/srv');
    expect(ej.argv.at(-1)).toBe(
      "cd /srv && exec runuser -u app -- env -- A='1 2' PATH=/opt/bin:/usr/bin:/bin ls -l",
    );
    const sh = await banger(['--socket', d.sock, 'vm', 'ssh', 'cfg-vm', '--json'], env);
    expect((JSON.parse(sh.stdout) as { argv: string[] }).argv.at(-1)).toBe(
      `cd /srv && exec runuser -u app -- env -- A='1 2' PATH=/opt/bin:/usr/bin:/bin sh -c 'exec "\${SHELL:-/bin/sh}"'`,
    );
    const wsVm = fakeVm('ws-vm', { image: 'cfg-img' });
    wsVm.workspace = {
      host_path: '/h/app',
      guest_path: '/root/repo',
      mode: 'tracked',
      include_untracked: false,
      base_commit: 'a'.repeat(40),
      files: 1,
      bytes: 1,
      prepared_at: T,
    };
    d.vms.set('ws-vm', wsVm);
    const w = await banger(['--socket', d.sock, 'vm', 'exec', 'ws-vm', '--json', '--', 'pwd'], env);
    expect((JSON.parse(w.stdout) as { cwd: string }).cwd).toBe('/root/repo');
    // an image without a config: the plain ssh login, as before
    d.vms.set('plain-vm', fakeVm('plain-vm'));
    const p = await banger(['--socket', d.sock, 'vm', 'ssh', 'plain-vm', '--json'], env);
    expect((JSON.parse(p.stdout) as { argv: string[] }).argv.at(-1)).toBe('root@127.0.0.1');
  });
});
