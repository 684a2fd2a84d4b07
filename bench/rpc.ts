// Part 2: RPC. `ping` round trips against bangerd and against the floor (bench/echo-server.ts, a
// separate Node process speaking the same framing), with the same client code (SocketTransport:
// one connection per call), 1 client and 32 concurrent clients.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { SocketTransport } from '../src/rpc/transport.ts';
import { percentile, ratio, round } from './stats.ts';
import { ROOT, type World } from './world.ts';

export interface RpcLoad {
  clients: number;
  calls: number;
  seconds: number;
  rps: number;
  p50_ms: number;
  p99_ms: number;
}

export interface RpcResult {
  daemon: RpcLoad[];
  floor: RpcLoad[];
  /** banger rps / floor rps and banger p50 / floor p50, per client count. */
  ratios: { clients: number; rps: number; p50: number; p99: number }[];
}

/** `clients` loops, each making `callsPerClient` sequential pings; latency of every call. */
export async function pingLoad(socket: string, clients: number, callsPerClient: number): Promise<RpcLoad> {
  const t = new SocketTransport(socket, { timeoutMs: 30_000 });
  const lat: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = 0; i < callsPerClient; i++) {
        const s = performance.now();
        await t.call('ping');
        lat.push(performance.now() - s);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  return {
    clients,
    calls: lat.length,
    seconds: round(seconds, 3),
    rps: round(lat.length / seconds, 0),
    p50_ms: round(percentile(lat, 50), 3),
    p99_ms: round(percentile(lat, 99), 3),
  };
}

/** Start bench/echo-server.ts on socket; the function returned stops it. */
export async function startEcho(socket: string): Promise<() => void> {
  const p = spawn(process.execPath, [join(ROOT, 'bench/echo-server.ts'), socket], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    p.stdout.once('data', () => resolve());
    p.once('exit', (code) => reject(new Error(`echo server exited ${code}`)));
  });
  return () => p.kill('SIGTERM');
}

export async function runRpc(
  w: World,
  opts: { callsSingle: number; callsPerClient32: number },
): Promise<RpcResult> {
  const echoSocket = join(w.dir, 'echo.sock');
  const stopEcho = await startEcho(echoSocket);
  try {
    const daemon: RpcLoad[] = [];
    const floor: RpcLoad[] = [];
    // Warm both (JIT, page cache), then alternate targets per configuration.
    await pingLoad(w.socket, 4, 50);
    await pingLoad(echoSocket, 4, 50);
    for (const [clients, per] of [
      [1, opts.callsSingle],
      [32, opts.callsPerClient32],
    ] as const) {
      daemon.push(await pingLoad(w.socket, clients, per));
      floor.push(await pingLoad(echoSocket, clients, per));
      w.say(
        `  ${clients} client(s): bangerd ${daemon.at(-1)!.rps} rps p50 ${daemon.at(-1)!.p50_ms} ms; ` +
          `floor ${floor.at(-1)!.rps} rps p50 ${floor.at(-1)!.p50_ms} ms`,
      );
    }
    return {
      daemon,
      floor,
      ratios: daemon.map((d, i) => ({
        clients: d.clients,
        rps: ratio(d.rps, floor[i]!.rps),
        p50: ratio(d.p50_ms, floor[i]!.p50_ms),
        p99: ratio(d.p99_ms, floor[i]!.p99_ms),
      })),
    };
  } finally {
    stopEcho();
  }
}
