// Part `egress` (issue 16): what a restricted egress policy costs a guest. A 100 MiB download
// from an HTTP server this process runs on the namespace's loopback, by curl inside two real VMs
// (user-mode networking, the default), each created once and kept across repetitions:
//   all     `--egress all`: plain QEMU user networking, curl to 10.0.2.2:PORT (the host's loopback)
//   allow   `--egress allow=127.0.0.1:PORT`: restrict=on, curl through the proxy address
//           10.0.2.100:3128 (guestfwd → one socat per connection → the daemon's egress proxy →
//           127.0.0.1:PORT), i.e. the whole path a restricted guest's traffic takes
// alternating which goes first, same run; the time is curl's own (`%{time_total}`, in the
// guest). Target: allow / all ≤ 1.2. Bridged mode is not measured: the bench's daemon runs
// without the root helper (`--helper-socket none`), so it has no bridge. Then, as a secondary
// figure, the proxy alone on the host (bench/egress-proxy.ts: no QEMU, no socat).
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ratio, round, summarize, type Summary } from './stats.ts';
import { banger, BIN, deleteVm, ROOT, runCmd, type World } from './world.ts';

/** The target: the download through `allow=` in at most this multiple of `all`. */
export const EGRESS_TARGET_RATIO = 1.2;
/** The proxy address every restricted user-mode guest has (src/egress/types.ts). */
const PROXY = 'http://10.0.2.100:3128';
const TAG = 'egress-bench';

export interface Download {
  /** curl's `%{time_total}` in the guest, ms. */
  ms: number;
  bytes: number;
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

export interface EgressResult {
  network: 'user';
  /** Why bridged mode has no figure (or, one day, its result). */
  bridged: string;
  policies: { all: string; allow: string };
  vms: { all: string; allow: string };
  summary: EgressSummary;
  reps: EgressRep[];
  proxy_only?: ProxyOnlyResult;
  proxy_only_error?: string;
}

/** The guest's command: one download, its result on one line. `proxy` set: through it only. */
export function downloadScript(url: string, proxy?: string): string {
  // --noproxy '' overrides the guest's NO_PROXY (it lists 127.0.0.1); '*' ignores HTTP_PROXY.
  const via = proxy === undefined ? `--noproxy '*'` : `--noproxy '' -x ${proxy}`;
  return `curl -sS --max-time 600 ${via} -o /dev/null -w '${TAG} %{http_code} %{size_download} %{time_total}\\n' ${url}`;
}

/** curl's line from downloadScript's output: ms and bytes; throws unless a full 200. */
export function parseDownload(out: string, want: number): { ms: number; bytes: number } {
  const m = new RegExp(`^${TAG} (\\d{3}) (\\d+) (\\d+(?:[.,]\\d+)?)$`, 'm').exec(out);
  if (!m) throw new Error(`no curl result line in the guest's output: ${out.trim().slice(-500)}`);
  const [, code, size, secs] = m;
  if (code !== '200') throw new Error(`the download answered ${code}: ${out.trim().slice(-500)}`);
  const bytes = Number(size);
  if (bytes !== want) throw new Error(`the download got ${bytes} bytes, not ${want}`);
  return { ms: round(Number(secs!.replace(',', '.')) * 1000), bytes };
}

/** Medians and ratios against the target. Pure. */
export function summarizeEgress(reps: EgressRep[], mib: number, target = EGRESS_TARGET_RATIO): EgressSummary {
  const all = summarize(reps.map((r) => r.all.ms));
  const allow = summarize(reps.map((r) => r.allow.ms));
  const each = reps.map((r) => ratio(r.allow.ms, r.all.ms));
  const r = ratio(allow.median, all.median);
  return {
    reps: reps.length,
    mib,
    all_ms: all,
    allow_ms: allow,
    all_mib_s: round(mib / (all.median / 1000)),
    allow_mib_s: round(mib / (allow.median / 1000)),
    all_exec_ms: summarize(reps.map((x) => x.all.exec_ms)),
    allow_exec_ms: summarize(reps.map((x) => x.allow.exec_ms)),
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
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

async function createVm(w: World, name: string, egress: string): Promise<void> {
  const args = ['vm', 'create', '--name', name, '--cold', '--egress', egress, '--json'];
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

/** The whole part: two kept VMs, `reps` alternating downloads each, then the proxy alone. */
export async function runEgress(
  w: World,
  opts: { reps: number; mib: number; tag: string; proxyOnly?: boolean },
): Promise<EgressResult> {
  const bytes = opts.mib * 2 ** 20;
  const server = await blobServer(bytes);
  const vms = { all: `${opts.tag}-all`, allow: `${opts.tag}-allow` };
  const policies = { all: 'all', allow: `allow=127.0.0.1:${server.port}` };
  const scripts = {
    all: downloadScript(`http://10.0.2.2:${server.port}/blob`),
    allow: downloadScript(`http://127.0.0.1:${server.port}/blob`, PROXY),
  };
  try {
    for (const k of ['all', 'allow'] as const) {
      w.say(`  ${vms[k]}: a cold create with --egress ${policies[k]} (kept)`);
      await createVm(w, vms[k], policies[k]);
    }
    // Not measured: the first download pays curl's and socat's page-cache misses and the
    // translation of the guests' network paths (TCG).
    for (const k of ['all', 'allow'] as const) {
      const d = await download(w, vms[k], scripts[k], bytes);
      w.say(`  warm-up ${k}: ${(d.ms / 1000).toFixed(2)} s`);
    }
    const reps: EgressRep[] = [];
    for (let i = 0; i < opts.reps; i++) {
      const order = i % 2 === 0 ? 'all-first' : 'allow-first';
      const sides = order === 'all-first' ? (['all', 'allow'] as const) : (['allow', 'all'] as const);
      const got: Partial<Record<'all' | 'allow', Download>> = {};
      for (const k of sides) got[k] = await download(w, vms[k], scripts[k], bytes);
      const rep: EgressRep = { index: i, order, all: got.all!, allow: got.allow! };
      reps.push(rep);
      w.say(
        `  rep ${i + 1}/${opts.reps} (${order}): all ${(rep.all.ms / 1000).toFixed(2)} s, ` +
          `allow= ${(rep.allow.ms / 1000).toFixed(2)} s: ${ratio(rep.allow.ms, rep.all.ms)}×`,
      );
    }
    const result: EgressResult = {
      network: 'user',
      bridged:
        'not measured: the bench daemon runs without the root helper (--helper-socket none), so it has no bridge',
      policies,
      vms,
      summary: summarizeEgress(reps, opts.mib),
      reps,
    };
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
    for (const name of Object.values(vms))
      await deleteVm(w, name).catch((err: unknown) => w.say(`egress: delete ${name}: ${String(err)}`));
  }
}

export function egressTable(r: EgressResult): string {
  const s = r.summary;
  const sec = (x: Summary): string =>
    `${(x.median / 1000).toFixed(2)} (${(x.min / 1000).toFixed(2)}–${(x.max / 1000).toFixed(2)})`;
  const line = (c: string[]): string => `| ${c.join(' | ')} |`;
  const out = [
    line([
      `${s.mib} MiB download, user-mode networking`,
      `\`--egress ${r.policies.all}\``,
      '`--egress allow=…`',
    ]),
    line(['---', '---', '---']),
    line(['curl in the guest, s: median (min–max)', sec(s.all_ms), sec(s.allow_ms)]),
    line(['throughput of the median, MiB/s', String(s.all_mib_s), String(s.allow_mib_s)]),
    line(['`banger vm exec` wall, s', sec(s.all_exec_ms), sec(s.allow_exec_ms)]),
    '',
    `${s.reps} alternating repetitions, one VM per policy (\`${r.policies.allow}\`); allow= / all ` +
      `**${s.ratio_allow_vs_all}** (each repetition ${s.ratio_each_rep.join(', ')}; worst ` +
      `${s.ratio_worst_rep}); target ≤ ${s.target_ratio}: **${s.target_met ? 'met' : 'not met'}**`,
    '',
    `Bridged mode: ${r.bridged}.`,
  ];
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
