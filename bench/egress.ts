// Part `egress` (issue 16): what a restricted egress policy costs a guest. A 100 MiB download
// from an HTTP server this process runs on the namespace's loopback, by curl inside two real VMs
// (user-mode networking, the default), each created once and kept across repetitions:
//   all     `--egress all`: plain QEMU user networking, curl to 10.0.2.2:PORT (the host's loopback)
//   allow   `--egress allow=127.0.0.1:PORT`: restrict=on, curl through the proxy address
//           10.0.2.100:3128 (guestfwd → one build/egress-relay per connection, which hands the
//           request head to the daemon's egress proxy and, once it says `direct`, connects to
//           127.0.0.1:PORT itself), i.e. the whole path a restricted guest's traffic takes
// alternating which goes first, same run; the time is curl's own (`%{time_total}`, in the
// guest). Target: allow / all ≤ 1.2. Then the same in bridged mode (the bench starts a
// bangerd-root in its namespace for this part, as the smoke suite does; the bridge, taps and
// nftables chains live in the namespace), the server on the bridge's address:
//   all     `--network bridge --egress all`: straight to GATEWAY:PORT
//   allow   `--network bridge --egress allow=GATEWAY:PORT`: through the proxy at GATEWAY:3128
//           (what the guest's HTTP_PROXY says), and as a third figure the same VM straight to
//           GATEWAY:PORT (`--noproxy '*'`: nftables only, no proxy)
// Then, as a secondary figure, the proxy alone on the host (bench/egress-proxy.ts: no QEMU, no
// socat).
import { createServer, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ratio, round, summarize, type Summary } from './stats.ts';
import { directMessage } from '../src/egress/relay.ts';
import { banger, BENCH_BRIDGE_GATEWAY, BIN, deleteVm, ROOT, runCmd, type World } from './world.ts';

/** The target: the download through `allow=` in at most this multiple of `all`. */
export const EGRESS_TARGET_RATIO = 1.2;
/** The proxy address every restricted user-mode guest has (src/egress/types.ts). */
const PROXY = 'http://10.0.2.100:3128';
const TAG = 'egress-bench';

export interface Download {
  /** curl's `%{time_total}` in the guest, ms. */
  ms: number;
  bytes: number;
  /**
   * curl's `%{time_starttransfer}`, ms: connect, the proxy's decision, the relay's start and the
   * upstream's first byte; `ms - ttfb_ms` is the body's transfer alone.
   */
  ttfb_ms?: number;
  /** `banger vm exec` spawned → exited on the host (SSH login and curl start included). */
  exec_ms: number;
}

export interface EgressRep {
  index: number;
  order: 'all-first' | 'allow-first';
  all: Download;
  allow: Download;
}

export interface EgressSummary {
  reps: number;
  mib: number;
  all_ms: Summary;
  allow_ms: Summary;
  /** MiB/s of the median download. */
  all_mib_s: number;
  allow_mib_s: number;
  all_exec_ms: Summary;
  allow_exec_ms: Summary;
  /** curl's time to the first byte of the answer (when every repetition has it). */
  all_ttfb_ms?: Summary;
  allow_ttfb_ms?: Summary;
  /** median(allow) / median(all). */
  ratio_allow_vs_all: number;
  /** allow / all of each repetition, in order. */
  ratio_each_rep: number[];
  ratio_worst_rep: number;
  target_ratio: number;
  target_met: boolean;
}

/** bench/egress-proxy.ts's JSON: the proxy alone on the host. */
export interface ProxyOnlyResult {
  mb: number;
  reps: number;
  target_ratio: number;
  results: Record<string, { direct_ms: number; proxied_ms: number; ratio: number }>;
}

/** One network mode's pair of VMs and their alternating downloads. */
export interface EgressNetResult {
  network: 'user' | 'bridge';
  policies: { all: string; allow: string };
  vms: { all: string; allow: string };
  summary: EgressSummary;
  reps: EgressRep[];
  /** Bridged: the allow= VM straight to the server (nftables only, no proxy), curl ms per rep. */
  allow_direct_ms?: Summary;
  /** median(allow_direct) / median(all). */
  ratio_direct_vs_all?: number;
  /**
   * User mode: the allow= VM's path with a stand-in in the proxy's place that hands every
   * connection straight back to the relay (no policy check): what the path costs without the proxy.
   */
  allow_relay_ms?: Summary;
  ratio_relay_vs_all?: number;
}

export interface EgressResult extends EgressNetResult {
  network: 'user';
  /** Bridged mode in a word: measured (see bridged_result), or why not. */
  bridged: string;
  bridged_result?: EgressNetResult;
  bridged_error?: string;
  proxy_only?: ProxyOnlyResult;
  proxy_only_error?: string;
}

/** The guest's command: one download, its result on one line. `proxy` set: through it only. */
export function downloadScript(url: string, proxy?: string): string {
  // --noproxy '' overrides the guest's NO_PROXY (it lists 127.0.0.1); '*' ignores HTTP_PROXY.
  const via = proxy === undefined ? `--noproxy '*'` : `--noproxy '' -x ${proxy}`;
  return `curl -sS --max-time 600 ${via} -o /dev/null -w '${TAG} %{http_code} %{size_download} %{time_total} %{time_starttransfer}\\n' ${url}`;
}

/** curl's line from downloadScript's output: ms and bytes; throws unless a full 200. */
export function parseDownload(out: string, want: number): { ms: number; bytes: number; ttfb_ms?: number } {
  const num = '(\\d+(?:[.,]\\d+)?)';
  const m = new RegExp(`^${TAG} (\\d{3}) (\\d+) ${num}(?: ${num})?$`, 'm').exec(out);
  if (!m) throw new Error(`no curl result line in the guest's output: ${out.trim().slice(-500)}`);
  const [, code, size, secs, ttfb] = m;
  if (code !== '200') throw new Error(`the download answered ${code}: ${out.trim().slice(-500)}`);
  const bytes = Number(size);
  if (bytes !== want) throw new Error(`the download got ${bytes} bytes, not ${want}`);
  const ms = (x: string): number => round(Number(x.replace(',', '.')) * 1000);
  return ttfb === undefined ? { ms: ms(secs!), bytes } : { ms: ms(secs!), bytes, ttfb_ms: ms(ttfb) };
}

/** Medians and ratios against the target. Pure. */
export function summarizeEgress(reps: EgressRep[], mib: number, target = EGRESS_TARGET_RATIO): EgressSummary {
  const all = summarize(reps.map((r) => r.all.ms));
  const allow = summarize(reps.map((r) => r.allow.ms));
  const each = reps.map((r) => ratio(r.allow.ms, r.all.ms));
  const r = ratio(allow.median, all.median);
  const ttfb = (k: 'all' | 'allow'): Summary | undefined => {
    const xs = reps.map((x) => x[k].ttfb_ms);
    return xs.every((x) => x !== undefined) && xs.length > 0 ? summarize(xs as number[]) : undefined;
  };
  const [allTtfb, allowTtfb] = [ttfb('all'), ttfb('allow')];
  return {
    reps: reps.length,
    mib,
    all_ms: all,
    allow_ms: allow,
    all_mib_s: round(mib / (all.median / 1000)),
    allow_mib_s: round(mib / (allow.median / 1000)),
    all_exec_ms: summarize(reps.map((x) => x.all.exec_ms)),
    allow_exec_ms: summarize(reps.map((x) => x.allow.exec_ms)),
    ...(allTtfb && allowTtfb ? { all_ttfb_ms: allTtfb, allow_ttfb_ms: allowTtfb } : {}),
    ratio_allow_vs_all: r,
    ratio_each_rep: each,
    ratio_worst_rep: round(Math.max(...each), 3),
    target_ratio: target,
    target_met: Number.isFinite(r) && r <= target,
  };
}

/** `bytes` of one 64 KiB block to every GET, with backpressure; on the namespace's loopback. */
async function blobServer(bytes: number): Promise<{ port: number; close: () => void }> {
  const block = Buffer.alloc(64 * 1024, 'x');
  const serve = (res: ServerResponse): void => {
    res.writeHead(200, { 'content-length': bytes, 'content-type': 'application/octet-stream' });
    let left = bytes;
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, block.length);
        left -= n;
        if (!res.write(n === block.length ? block : block.subarray(0, n)))
          return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  };
  const server = createServer((_req, res) => serve(res));
  // Every address of the bench's namespace: its loopback (user mode's 10.0.2.2) and the bridge.
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '0.0.0.0', resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

async function createVm(w: World, name: string, egress: string, network: 'user' | 'bridge'): Promise<void> {
  const args = ['vm', 'create', '--name', name, '--cold', '--network', network, '--egress', egress, '--json'];
  const r = await banger(w, args, { timeoutMs: 600_000 });
  if (r.code !== 0)
    throw new Error(
      `banger ${args.join(' ')} exited ${r.code}: ${(r.stdout + r.stderr).trim().slice(-2000)}`,
    );
}

async function download(w: World, vm: string, script: string, bytes: number): Promise<Download> {
  // `--socket` before `--`: everything after it is the guest's command line.
  const r = await runCmd([BIN('banger'), 'vm', 'exec', vm, '--socket', w.socket, '--', 'sh', '-c', script], {
    timeoutMs: 900_000,
  });
  if (r.code !== 0)
    throw new Error(
      `vm exec ${vm} (download) exited ${r.code}: ${(r.stdout + r.stderr).trim().slice(-1000)}`,
    );
  return { ...parseDownload(r.stdout, bytes), exec_ms: Math.round(r.ms) };
}

/** The secondary figure: bench/egress-proxy.ts in a child process, its JSON on stdout. */
async function proxyOnly(mib: number, reps: number): Promise<ProxyOnlyResult> {
  const r = await runCmd(
    [process.execPath, join(ROOT, 'bench/egress-proxy.ts'), '--mb', String(mib), '--reps', String(reps)],
    { timeoutMs: 900_000 },
  );
  if (r.code !== 0)
    throw new Error(`bench/egress-proxy.ts exited ${r.code}: ${r.stderr.trim().slice(-1000)}`);
  return JSON.parse(r.stdout) as ProxyOnlyResult;
}

interface NetPlan {
  network: 'user' | 'bridge';
  vms: { all: string; allow: string };
  policies: { all: string; allow: string };
  scripts: { all: string; allow: string; direct?: string; relay?: string };
}

function plans(tag: string, port: number): { user: NetPlan; bridge: NetPlan } {
  const gw = BENCH_BRIDGE_GATEWAY;
  return {
    user: {
      network: 'user',
      vms: { all: `${tag}-all`, allow: `${tag}-allow` },
      policies: { all: 'all', allow: `allow=127.0.0.1:${port}` },
      scripts: {
        all: downloadScript(`http://10.0.2.2:${port}/blob`),
        allow: downloadScript(`http://127.0.0.1:${port}/blob`, PROXY),
        // Through guestfwd and its relay, a stand-in in the proxy's place (see relayOnly).
        relay: downloadScript(`${PROXY}/blob`),
      },
    },
    bridge: {
      network: 'bridge',
      vms: { all: `${tag}-ball`, allow: `${tag}-ballow` },
      policies: { all: 'all', allow: `allow=${gw}:${port}` },
      scripts: {
        all: downloadScript(`http://${gw}:${port}/blob`),
        allow: downloadScript(`http://${gw}:${port}/blob`, `http://${gw}:3128`),
        direct: downloadScript(`http://${gw}:${port}/blob`),
      },
    },
  };
}

/**
 * One download by the allow= VM of user mode with the proxy's socket taken over by a stand-in
 * that hands every connection straight back to the relay (`direct` to 127.0.0.1:PORT, no policy
 * check, no event; the proxy's socket renamed aside and back: its listener keeps working): the
 * guestfwd path's own cost, the relay alone in the data path. The bench owns the state dir.
 */
async function relayOnly(
  w: World,
  vm: string,
  script: string,
  port: number,
  bytes: number,
): Promise<Download> {
  const id = (await w.client.vm.list({})).vms.find((v) => v.name === vm)?.id;
  if (!id) throw new Error(`no vm ${vm}`);
  const sock = join(w.stateDir, 'egress', 'px', `${id}.sock`);
  const aside = `${sock}.px`;
  renameSync(sock, aside);
  const head = Buffer.from(`GET /blob HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
  const open = new Set<Socket>();
  const standIn = createNetServer((s) => {
    let got = Buffer.alloc(0);
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => s.destroy());
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.indexOf('\r\n\r\n') < 0) return;
      s.removeAllListeners('data');
      // Written, not ended: as the proxy does, the socket stays open (its EOF ends the relay).
      s.write(directMessage({ ip: '127.0.0.1', port, up: head, down: Buffer.alloc(0), body: 0 }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    standIn.once('error', reject);
    standIn.listen(sock, resolve);
  });
  try {
    return await download(w, vm, script, bytes);
  } finally {
    standIn.close();
    for (const s of open) s.destroy();
    rmSync(sock, { force: true });
    renameSync(aside, sock);
  }
}

/** One network mode: two kept VMs, a warm-up each, `reps` alternating downloads; then deleted. */
async function measureNet(
  w: World,
  p: NetPlan,
  reps: number,
  bytes: number,
  mib: number,
  /** The server's port (user mode's relay-only download). */
  port?: number,
): Promise<EgressNetResult> {
  const { vms, policies, scripts } = p;
  try {
    for (const k of ['all', 'allow'] as const) {
      w.say(`  ${vms[k]}: a cold create with --network ${p.network} --egress ${policies[k]} (kept)`);
      await createVm(w, vms[k], policies[k], p.network);
    }
    // Not measured: the first download pays curl's and socat's page-cache misses and the
    // translation of the guests' network paths (TCG).
    for (const k of ['all', 'allow'] as const) {
      const d = await download(w, vms[k], scripts[k], bytes);
      w.say(`  ${p.network} warm-up ${k}: ${(d.ms / 1000).toFixed(2)} s`);
    }
    const out: EgressRep[] = [];
    const direct: number[] = [];
    const relay: number[] = [];
    for (let i = 0; i < reps; i++) {
      const order = i % 2 === 0 ? 'all-first' : 'allow-first';
      const sides = order === 'all-first' ? (['all', 'allow'] as const) : (['allow', 'all'] as const);
      const got: Partial<Record<'all' | 'allow', Download>> = {};
      for (const k of sides) got[k] = await download(w, vms[k], scripts[k], bytes);
      const rep: EgressRep = { index: i, order, all: got.all!, allow: got.allow! };
      out.push(rep);
      let extra = '';
      if (scripts.direct !== undefined) {
        // A secondary figure: its failure is said, not fatal to the part.
        try {
          const d = await download(w, vms.allow, scripts.direct, bytes);
          direct.push(d.ms);
          extra = `, allow= without the proxy ${(d.ms / 1000).toFixed(2)} s`;
        } catch (err) {
          extra = `, allow= without the proxy failed: ${String(err).slice(0, 300)}`;
        }
      }
      if (scripts.relay !== undefined && port !== undefined) {
        try {
          const d = await relayOnly(w, vms.allow, scripts.relay, port, bytes);
          relay.push(d.ms);
          extra += `, allow= path with the relay alone ${(d.ms / 1000).toFixed(2)} s`;
        } catch (err) {
          extra += `, the relay-only download failed: ${String(err).slice(0, 300)}`;
        }
      }
      const first = (d: Download): string =>
        d.ttfb_ms === undefined ? '' : ` (first byte ${(d.ttfb_ms / 1000).toFixed(3)} s)`;
      w.say(
        `  ${p.network} rep ${i + 1}/${reps} (${order}): all ${(rep.all.ms / 1000).toFixed(2)} s${first(rep.all)}, ` +
          `allow= ${(rep.allow.ms / 1000).toFixed(2)} s${first(rep.allow)}: ${ratio(rep.allow.ms, rep.all.ms)}×${extra}`,
      );
    }
    const summary = summarizeEgress(out, mib);
    const r: EgressNetResult = { network: p.network, policies, vms, summary, reps: out };
    if (direct.length > 0) {
      r.allow_direct_ms = summarize(direct);
      r.ratio_direct_vs_all = ratio(r.allow_direct_ms.median, summary.all_ms.median);
    }
    if (relay.length > 0) {
      r.allow_relay_ms = summarize(relay);
      r.ratio_relay_vs_all = ratio(r.allow_relay_ms.median, summary.all_ms.median);
    }
    return r;
  } finally {
    for (const name of Object.values(vms))
      await deleteVm(w, name).catch((err: unknown) => w.say(`egress: delete ${name}: ${String(err)}`));
  }
}

/**
 * The whole part: user mode, then (with a root helper) bridged mode, then the proxy alone.
 * `bridged` false: the world has no root helper, so no bridge.
 */
export async function runEgress(
  w: World,
  opts: { reps: number; mib: number; tag: string; proxyOnly?: boolean; bridged?: boolean },
): Promise<EgressResult> {
  const bytes = opts.mib * 2 ** 20;
  const server = await blobServer(bytes);
  const p = plans(opts.tag, server.port);
  try {
    const user = await measureNet(w, p.user, opts.reps, bytes, opts.mib, server.port);
    const result: EgressResult = {
      ...user,
      network: 'user',
      bridged: 'not measured: the bench ran without the root helper, so it had no bridge',
    };
    if (opts.bridged) {
      try {
        result.bridged_result = await measureNet(w, p.bridge, opts.reps, bytes, opts.mib);
        result.bridged = 'measured';
      } catch (err) {
        result.bridged_error = err instanceof Error ? err.message : String(err);
        result.bridged = `failed: ${result.bridged_error}`;
      }
    }
    if (opts.proxyOnly !== false) {
      w.say(`  the proxy alone on the host (bench/egress-proxy.ts, ${opts.mib} MiB, ${opts.reps} reps)`);
      try {
        result.proxy_only = await proxyOnly(opts.mib, opts.reps);
      } catch (err) {
        result.proxy_only_error = err instanceof Error ? err.message : String(err);
      }
    }
    return result;
  } finally {
    server.close();
  }
}

function netTable(r: EgressNetResult): string[] {
  const s = r.summary;
  const sec = (x: Summary): string =>
    `${(x.median / 1000).toFixed(2)} (${(x.min / 1000).toFixed(2)}–${(x.max / 1000).toFixed(2)})`;
  const line = (c: string[]): string => `| ${c.join(' | ')} |`;
  const mode = r.network === 'user' ? 'user-mode networking' : 'bridged networking';
  const out = [
    line([`${s.mib} MiB download, ${mode}`, `\`--egress ${r.policies.all}\``, '`--egress allow=…`']),
    line(['---', '---', '---']),
    line(['curl in the guest, s: median (min–max)', sec(s.all_ms), sec(s.allow_ms)]),
    line(['throughput of the median, MiB/s', String(s.all_mib_s), String(s.allow_mib_s)]),
    line(['`banger vm exec` wall, s', sec(s.all_exec_ms), sec(s.allow_exec_ms)]),
    ...(s.all_ttfb_ms && s.allow_ttfb_ms
      ? [line(['curl to the first byte, s', sec(s.all_ttfb_ms), sec(s.allow_ttfb_ms)])]
      : []),
    '',
    `${s.reps} alternating repetitions, one VM per policy (\`${r.policies.allow}\`); allow= / all ` +
      `**${s.ratio_allow_vs_all}** (each repetition ${s.ratio_each_rep.join(', ')}; worst ` +
      `${s.ratio_worst_rep}); target ≤ ${s.target_ratio}: **${s.target_met ? 'met' : 'not met'}**`,
  ];
  if (r.allow_relay_ms)
    out.push(
      '',
      `The allow= VM's path with the relay alone (a stand-in in the proxy's place hands every ` +
        `connection straight back, no check): ${sec(r.allow_relay_ms)} s, ${r.ratio_relay_vs_all}× all.`,
    );
  if (r.allow_direct_ms)
    out.push(
      '',
      `The allow= VM straight to the server (nftables only, no proxy): ${sec(r.allow_direct_ms)} s, ` +
        `${r.ratio_direct_vs_all}× all.`,
    );
  return out;
}

export function egressTable(r: EgressResult): string {
  const out = netTable(r);
  if (r.bridged_result) out.push('', ...netTable(r.bridged_result));
  else out.push('', `Bridged mode: ${r.bridged}.`);
  const p = r.proxy_only;
  if (p) {
    const cases = Object.entries(p.results).map(
      ([k, v]) =>
        `${k} ${v.ratio}× (${(v.direct_ms / 1000).toFixed(2)} → ${(v.proxied_ms / 1000).toFixed(2)} s)`,
    );
    out.push(
      '',
      `The proxy alone on the host (no QEMU, no socat; ${p.mb} MiB, median of ${p.reps}): ${cases.join(', ')}`,
    );
  } else if (r.proxy_only_error) out.push('', `The proxy alone on the host: failed (${r.proxy_only_error})`);
  return out.join('\n');
}
