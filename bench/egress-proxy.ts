// node bench/egress-proxy.ts [--mb 100] [--reps 3]: the egress proxy's own cost on the host (issue
// 16), the secondary figure of the bench part `egress` (bench/egress.ts runs it and reads its JSON
// on stdout; the primary figure is the same download inside real guests). A 100 MiB download from
// a local server, direct against through banger's EgressProxy (the daemon's code, in process,
// over its per-VM unix socket), alternating, same run:
//   http      plain GET direct  vs  absolute-URI request through the proxy (policy allow=)
//   connect   HTTPS direct      vs  CONNECT tunnel through the proxy (allow=, no secrets)
//   tls       HTTPS direct      vs  CONNECT terminated by the proxy (a VM with secrets)
// No VM, no root: it measures what the proxy adds, without QEMU's user networking and the socat
// that connects each guest connection to the proxy's socket. The proxy runs in this process, as
// in the daemon; the servers and the client in a child process (--peer), so the proxy does not
// share an event loop with them.
import { once } from 'node:events';
import { createServer as createHttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Writable } from 'node:stream';
import pino from 'pino';
import { EgressCa } from '../src/egress/ca.ts';
import { EgressProxy } from '../src/egress/proxy.ts';
import { parseEgress } from '../src/egress/rules.ts';

const { values } = parseArgs({
  options: { mb: { type: 'string' }, reps: { type: 'string' }, peer: { type: 'string' } },
});
const MB = Number(values.mb ?? 100);
const REPS = Number(values.reps ?? 3);
const TOTAL = MB * 1024 * 1024;
const block = Buffer.alloc(64 * 1024, 'x');

/** The response body: TOTAL bytes of one block, written with backpressure. */
function serve(res: ServerResponse): void {
  res.writeHead(200, { 'content-length': TOTAL });
  let left = TOTAL;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, block.length);
      left -= n;
      if (!res.write(n === block.length ? block : block.subarray(0, n))) return void res.once('drain', pump);
    }
    res.end();
  };
  pump();
}

/** Read an HTTP/1.1 response off a stream up to TOTAL body bytes; resolves with ms. */
function drain(s: Socket | ReturnType<typeof tlsConnect>, request: string): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    let got = 0;
    // The head until its blank line (it may come in more than one read), then body bytes.
    let head: Buffer | undefined = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      if (head !== undefined) {
        head = Buffer.concat([head, d]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!head.subarray(0, 12).toString().includes('200'))
          return reject(new Error(head.subarray(0, 200).toString()));
        got += head.length - end - 4;
        head = undefined;
      } else got += d.length;
      if (got >= TOTAL) {
        s.destroy();
        resolve(performance.now() - t0);
      }
    });
    s.on('error', reject);
    s.write(request);
  });
}

function connectThrough(sock: string, target: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect(sock);
    s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    s.once('data', (d: Buffer) => {
      if (!d.toString().startsWith('HTTP/1.1 200')) return reject(new Error(d.toString()));
      resolve(s);
    });
    s.once('error', reject);
  });
}

interface PeerSetup {
  dir: string;
  plainVm: string;
  secretVm: string;
}

/** The child: servers and client; prints the results as JSON. */
async function peer(setup: PeerSetup): Promise<void> {
  const { dir, plainVm, secretVm } = setup;
  const leaf = {
    cert: readFileSync(join(dir, 'leaf.crt'), 'utf8'),
    key: readFileSync(join(dir, 'leaf.key'), 'utf8'),
  };
  const upPem = readFileSync(join(dir, 'up.pem'), 'utf8');
  const bangerPem = readFileSync(join(dir, 'banger.pem'), 'utf8');
  const hp = 18080 + (process.pid % 1000);
  const sp = hp + 1000;
  const plain = createHttpServer((_q, res) => serve(res));
  plain.listen(hp, '127.0.0.1');
  const secure = createHttpsServer(leaf, (_q, res) => serve(res));
  secure.listen(sp, '127.0.0.1');
  await Promise.all([once(plain, 'listening'), once(secure, 'listening')]);
  const get = (host: string): string => `GET /big HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
  const direct = (): Promise<number> =>
    drain(
      tlsConnect({ host: '127.0.0.1', port: sp, servername: 'bench.test', ca: [upPem] }),
      get('bench.test'),
    );
  const cases: Record<string, { direct: () => Promise<number>; proxied: () => Promise<number> }> = {
    http: {
      direct: () => drain(netConnect(hp, '127.0.0.1'), get('bench.test')),
      proxied: () =>
        drain(
          netConnect(plainVm),
          `GET http://bench.test:${hp}/big HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n`,
        ),
    },
    connect: {
      direct,
      proxied: async () =>
        drain(
          tlsConnect({
            socket: await connectThrough(plainVm, `bench.test:${sp}`),
            servername: 'bench.test',
            ca: [upPem],
          }),
          get('bench.test'),
        ),
    },
    tls: {
      direct,
      proxied: async () =>
        drain(
          tlsConnect({
            socket: await connectThrough(secretVm, `bench.test:${sp}`),
            servername: 'bench.test',
            ca: [bangerPem],
          }),
          get('bench.test'),
        ),
    },
  };
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const out: Record<string, { direct_ms: number; proxied_ms: number; ratio: number }> = {};
  for (const [name, c] of Object.entries(cases)) {
    await c.proxied(); // warm-up: the leaf certificate, JIT
    const d: number[] = [];
    const p: number[] = [];
    for (let i = 0; i < REPS; i++) {
      d.push(await c.direct());
      p.push(await c.proxied());
    }
    const dm = median(d);
    const pm = median(p);
    out[name] = {
      direct_ms: Math.round(dm),
      proxied_ms: Math.round(pm),
      ratio: Math.round((pm / dm) * 100) / 100,
    };
    process.stderr.write(
      `${name.padEnd(8)} ${MB} MB: direct ${Math.round(dm)} ms (${Math.round((MB / dm) * 1000)} MB/s), through the proxy ${Math.round(pm)} ms: ${(pm / dm).toFixed(2)}×\n`,
    );
  }
  console.log(JSON.stringify({ mb: MB, reps: REPS, target_ratio: 1.2, results: out }, null, 2));
  plain.close();
  secure.close();
}

/** The parent: the proxy (the daemon's code) with two VMs, one without and one with secrets. */
async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bgbench-egress-'));
  try {
    const upCa = new EgressCa(join(dir, 'up'));
    const leaf = await upCa.leafFor('bench.test');
    writeFileSync(join(dir, 'leaf.crt'), leaf.cert);
    writeFileSync(join(dir, 'leaf.key'), leaf.key);
    writeFileSync(join(dir, 'up.pem'), await upCa.certPem());
    const bangerCa = new EgressCa(join(dir, 'egress'));
    writeFileSync(join(dir, 'banger.pem'), await bangerCa.certPem());
    mkdirSync(join(dir, 'px'));
    const proxy = new EgressProxy({
      log: pino({ level: 'warn' }, new Writable({ write: (_c, _e, cb) => cb() })),
      socketDir: join(dir, 'px'),
      ca: bangerCa,
      placeholder: () => 'banger-secret-00000000000000000000000000000000',
      secretValue: async () => 'unused',
      record: () => undefined,
      upstreamCa: [await upCa.certPem()],
      resolve: async () => ['127.0.0.1'],
    });
    const policy = parseEgress('allow=bench.test');
    const setup: PeerSetup = {
      dir,
      plainVm: proxy.attach({ id: 'benchplain', name: 'bench', policy, secrets: [] }).unixSocket,
      secretVm: proxy.attach({
        id: 'benchsecret',
        name: 'bench-s',
        policy,
        secrets: [{ name: 'K', hosts: ['bench.test'] }],
      }).unixSocket,
    };
    const child = spawn(
      process.execPath,
      [
        new URL(import.meta.url).pathname,
        '--mb',
        String(MB),
        '--reps',
        String(REPS),
        '--peer',
        JSON.stringify(setup),
      ],
      { stdio: ['ignore', 'inherit', 'inherit'] },
    );
    const [code] = (await once(child, 'exit')) as [number | null];
    proxy.close();
    if (code !== 0) throw new Error(`bench peer exited ${code}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (values.peer !== undefined) await peer(JSON.parse(values.peer) as PeerSetup);
else await main();
