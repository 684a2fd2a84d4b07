// Running iproute2 / nftables: by argv with execFile (never a shell, no stdin), bounded in time
// and output, with a fixed PATH and locale. A failure becomes a HostnetError naming the operation and
// carrying the tool's own stderr.
import { execFile } from 'node:child_process';

export class HostnetError extends Error {
  /** The Links/Nat/Resolver operation that failed, e.g. "create_tap". */
  readonly op: string;
  constructor(op: string, message: string, opts: { cause?: unknown } = {}) {
    super(`${op}: ${message}`, opts.cause !== undefined ? { cause: opts.cause } : {});
    this.name = 'HostnetError';
    this.op = op;
  }
}

export interface RunOptions {
  timeoutMs?: number;
}

/** Runs file with args; resolves to stdout, rejects with an Error whose message holds stderr. */
export type Runner = (file: string, args: readonly string[], opts?: RunOptions) => Promise<string>;

/** Where the tools live: absolute paths so PATH cannot substitute another binary. */
export interface ToolPaths {
  ip: string;
  nft: string;
  resolvectl: string;
}

export const DEFAULT_TOOLS: ToolPaths = {
  ip: '/usr/sbin/ip',
  nft: '/usr/sbin/nft',
  resolvectl: '/usr/bin/resolvectl',
};

const MAX_OUTPUT = 16 * 1024 * 1024;

export const execRunner: Runner = (file, args, opts = {}) =>
  new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      {
        timeout: opts.timeoutMs ?? 20_000,
        maxBuffer: MAX_OUTPUT,
        encoding: 'utf8',
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
      },
      (err, stdout, stderr) => {
        if (err) {
          const detail = stderr.trim() || err.message;
          reject(new Error(`${file} ${args.join(' ')}: ${detail}`, { cause: err }));
        } else resolve(stdout);
      },
    );
    child.stdin?.end();
  });

/** JSON.parse that says which command produced the garbage. */
export function parseJsonOutput(op: string, what: string, text: string): unknown {
  const t = text.trim();
  if (t === '') return [];
  try {
    return JSON.parse(t) as unknown;
  } catch (err) {
    throw new HostnetError(op, `${what} did not print JSON: ${t.slice(0, 200)}`, { cause: err });
  }
}
