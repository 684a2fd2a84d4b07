// The CLI's fast path: the few commands scripts and health checks run most often, answered
// without loading oclif. Loading @oclif/core (≈160 CommonJS modules, before any command code) is
// most of a short command's start-up; `banger ping` and `banger --version` do not need it.
//
// Only an argv this file fully understands takes the fast path; anything else (another command,
// another flag, --help, a repeated flag, an environment that changes oclif's output) returns
// false and oclif runs the command as before. The output is oclif's, byte for byte: the same
// lines through console.log, the same pretty JSON, the same error reports (error-report.ts), and
// tests compare both paths. An error this file cannot word is not reported here: the command,
// a read that is safe to repeat, runs again under oclif, which reports it as it always has.
import { arch, platform, release } from 'node:os';
import { format } from 'node:util';
// Types only (erased): the client's modules load when a command needs them.
import type { BangerClient } from '../../generated/client.gen.ts';

interface FastArgs {
  json: boolean;
  socket: string | undefined;
}

/** Run argv (global flags already hoisted) on the fast path; false when it does not apply. */
export async function runFastPath(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<boolean> {
  if (!fastEnvironment(env)) return false;
  if (argv[0] === '--version') return printUserAgent();
  const command = argv[0];
  if (command !== 'ping' && command !== 'version') return false;
  const flags = parseFastFlags(argv.slice(1));
  if (!flags) return false;
  // A context (BANGER_CONTEXT, a current one) sends the command over SSH: oclif's path does that.
  if (flags.socket === undefined && (await import('./contexts.ts')).contextInPlay(env)) return false;
  // Pretty JSON on a terminal may be coloured by oclif's theme: leave that to oclif.
  if (flags.json && (process.stdout.isTTY || env.FORCE_COLOR !== undefined)) return false;
  return command === 'ping' ? ping(flags) : version(flags);
}

/**
 * Only `--json`, `--socket PATH` and `--socket=PATH`, each at most once; undefined for anything
 * else (oclif then parses it and words any error).
 */
export function parseFastFlags(args: readonly string[]): FastArgs | undefined {
  let json = false;
  let socket: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--json') {
      if (json) return undefined;
      json = true;
    } else if (a === '--socket' || a.startsWith('--socket=')) {
      if (socket !== undefined) return undefined;
      const value = a === '--socket' ? args[++i] : a.slice('--socket='.length);
      if (value === undefined || value === '' || value.startsWith('-')) return undefined;
      socket = value;
    } else return undefined;
  }
  return { json, socket };
}

/**
 * Whether oclif would print exactly what this file prints: no oclif debug output asked for, no
 * JSON forced by BANGER_CONTENT_TYPE, not under WSL (oclif's user agent says "wsl" there).
 * BANGER_NO_FAST_PATH=1 turns the fast path off (the tests compare both paths with it).
 */
function fastEnvironment(env: NodeJS.ProcessEnv): boolean {
  if (env.BANGER_NO_FAST_PATH) return false;
  if (env.DEBUG !== undefined || env.BANGER_DEBUG !== undefined) return false;
  if (env.BANGER_CONTENT_TYPE !== undefined || env.OCLIF_NEXT_VERSION !== undefined) return false;
  return !release().toLowerCase().includes('microsoft');
}

/** oclif's `--version`: its config's user agent. */
async function printUserAgent(): Promise<true> {
  const { BANGER_VERSION } = await import('../version.ts');
  const cpu = arch() === 'ia32' ? 'x86' : arch();
  say(`banger/${BANGER_VERSION} ${platform()}-${cpu} node-${process.version}`);
  return true;
}

/** As oclif's Command#log: console.log of the formatted line. */
function say(line: string): void {
  console.log(format(line));
}

/** As oclif's Command#logJson on a non-terminal: pretty JSON, two spaces. */
function logJson(json: unknown): void {
  console.log(format(JSON.stringify(json, undefined, 2)));
}

async function ping(flags: FastArgs): Promise<boolean> {
  const { client } = await clientFor(flags);
  return reportErrors(flags, async () => {
    const t0 = performance.now();
    const r = await client.ping();
    const rtt_ms = Math.round((performance.now() - t0) * 100) / 100;
    if (flags.json) logJson({ ...r, rtt_ms });
    else say(`pong from bangerd ${r.version} (protocol ${r.protocol_version}) in ${rtt_ms} ms`);
  });
}

async function version(flags: FastArgs): Promise<boolean> {
  const [{ client }, { BANGER_VERSION }, { PROTOCOL_VERSION }] = await Promise.all([
    clientFor(flags),
    import('../version.ts'),
    import('../../generated/methods.gen.ts'),
  ]);
  const out: { version: string; protocol_version: number; node: string; daemon?: string } = {
    version: BANGER_VERSION,
    protocol_version: PROTOCOL_VERSION,
    node: process.version,
  };
  try {
    out.daemon = (await client.ping(undefined, { timeoutMs: 2000 })).version;
  } catch {
    // no daemon: the CLI's own version is still worth printing
  }
  if (flags.json) logJson(out);
  else {
    say(`banger ${out.version} (protocol ${out.protocol_version}, node ${out.node})`);
    if (out.daemon) say(`bangerd ${out.daemon}`);
  }
  return true;
}

async function clientFor(flags: FastArgs): Promise<{ client: BangerClient }> {
  // The SDK's transport, without the async op-id context (node:async_hooks, node:crypto) of
  // rpc/transport.ts: the CLI never runs in an op context, so both send the same request.
  const [{ BangerClient }, { UnixSocketTransport }, { resolveDaemonSocket }] = await Promise.all([
    import('../../generated/client.gen.ts'),
    import('../rpc/client-socket.ts'),
    import('../paths.ts'),
  ]);
  return { client: new BangerClient(new UnixSocketTransport(resolveDaemonSocket(flags.socket))) };
}

/** Run fn; an error banger words is reported as oclif's commands report it, others give false. */
async function reportErrors(flags: FastArgs, fn: () => Promise<void>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (err) {
    const { rpcErrorReport, writeCliError } = await import('./error-report.ts');
    const report = rpcErrorReport(err);
    if (!report) return false;
    writeCliError(report, { json: flags.json, bin: 'banger', logJson });
    return true;
  }
}
