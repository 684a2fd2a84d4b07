// peerCredOf / makePeerAuthorizer against real unix sockets: a connection from this process, and
// (as root) one from a child running as nobody, which the root helper's authorizer must refuse.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makePeerAuthorizer, peerCredOf, type PeerCred } from '../../src/rpc/peercred.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

interface Seen {
  cred: PeerCred;
  verdict: string | null;
}

let dir = '';
const servers: Server[] = [];

beforeAll(() => {
  // Builds build/peercred.node when missing or older than native/peercred.c; a no-op otherwise.
  execFileSync(process.execPath, [join(root, 'scripts', 'build-addon.mjs')], { stdio: 'pipe' });
  dir = mkdtempSync(join(tmpdir(), 'banger-peercred-'));
  // The nobody child must be able to reach and connect to the socket.
  chmodSync(dir, 0o777);
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A unix-socket server whose next connection is inspected with `authorize` and then closed. */
async function listen(name: string, allowedUids: number[]): Promise<{ path: string; next: Promise<Seen> }> {
  const path = join(dir, name);
  const authorize = makePeerAuthorizer(allowedUids);
  let resolveSeen!: (s: Seen) => void;
  let rejectSeen!: (e: unknown) => void;
  const next = new Promise<Seen>((res, rej) => {
    resolveSeen = res;
    rejectSeen = rej;
  });
  const server = createServer((socket: Socket) => {
    try {
      resolveSeen({ cred: peerCredOf(socket), verdict: authorize(socket) });
    } catch (err) {
      rejectSeen(err);
    } finally {
      socket.end();
    }
  });
  servers.push(server);
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => res());
  });
  chmodSync(path, 0o777);
  return { path, next };
}

/** Connects from this process and waits until the server hangs up. */
function connectHere(path: string): Promise<void> {
  return new Promise((res, rej) => {
    const c = createConnection(path);
    c.on('error', rej);
    c.on('close', () => res());
    c.resume();
  });
}

describe('peerCredOf', () => {
  it('reports this process for a connection from this process', async () => {
    const { path, next } = await listen('self.sock', [process.getuid!()]);
    const [seen] = await Promise.all([next, connectHere(path)]);
    expect(seen.cred).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    expect(seen.verdict).toBeNull();
  });

  it('refuses a uid outside the allowed list, naming it and the allowed ones', async () => {
    const uid = process.getuid!();
    const other = uid + 1000;
    const { path, next } = await listen('refuse.sock', [other, other + 1]);
    const [seen] = await Promise.all([next, connectHere(path)]);
    expect(seen.verdict).toBe(`peer uid ${uid} is not allowed (allowed: ${other}, ${other + 1})`);
  });

  it('fails closed on a destroyed socket', async () => {
    const path = join(dir, 'destroyed.sock');
    const authorize = makePeerAuthorizer([process.getuid!()]);
    const verdict = new Promise<string | null>((res) => {
      const server = createServer((socket) => {
        socket.destroy();
        res(authorize(socket));
      });
      servers.push(server);
      server.listen(path, () => void connectHere(path).catch(() => undefined));
    });
    expect(await verdict).toMatch(/^cannot verify peer credentials: .*no open file descriptor/);
  });

  it('fails closed on a TCP socket (the kernel would report the overflow uid)', async () => {
    const authorize = makePeerAuthorizer([NOBODY, process.getuid!()]);
    const seen = new Promise<{ verdict: string | null; error: unknown }>((res) => {
      const server = createServer((socket) => {
        let error: unknown = null;
        try {
          peerCredOf(socket);
        } catch (err) {
          error = err;
        }
        res({ verdict: authorize(socket), error });
        socket.destroy();
      });
      servers.push(server);
      server.listen(0, '127.0.0.1', () => {
        const addr = server.address();
        if (addr === null || typeof addr === 'string') throw new Error('no tcp address');
        createConnection(addr.port, '127.0.0.1').on('error', () => undefined);
      });
    });
    const { verdict, error } = await seen;
    expect(String(error)).toMatch(/not a unix socket/);
    expect(verdict).toMatch(/^cannot verify peer credentials: .*not a unix socket/);
  });

  it('sees uid 65534 for a child running as nobody, and the root-only authorizer refuses it', async (ctx) => {
    if (!isRoot) {
      ctx.skip('needs root to spawn a child as nobody (setpriv --reuid=65534)');
      return;
    }
    const { path, next } = await listen('nobody.sock', [0]);
    const script =
      `const c = require('node:net').createConnection(${JSON.stringify(path)});` +
      `c.on('error', (e) => { console.error(e.message); process.exit(2); });` +
      `c.on('close', () => process.exit(0)); c.resume();`;
    const child = spawn(
      'setpriv',
      [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', script],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((res, rej) => {
      child.on('error', rej);
      child.on('close', (code) => res(code));
    });
    const [seen, code] = await Promise.all([next, exited]);
    expect(code, stderr).toBe(0);
    expect(seen.cred.uid).toBe(NOBODY);
    expect(seen.cred.gid).toBe(NOBODY);
    // setpriv execs node in place, so the peer is the spawned process itself.
    expect(seen.cred.pid).toBe(child.pid);
    expect(seen.verdict).toBe(`peer uid ${NOBODY} is not allowed (allowed: 0)`);
  });
});
