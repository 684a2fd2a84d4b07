// Naming things on the command line: checking VM names before they go on the wire, and running one
// call per name concurrently (`banger vm stop a b c`) with a result or an error for each.
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { ERROR_CODES, type ErrorCode } from '../../generated/errors.gen.ts';
import { ErrorResponse } from '../rpc/errors.ts';
import { ConnectError } from '../rpc/transport.ts';
import { exitCodeFor } from './exit-codes.ts';

const VM_NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;
const RESOURCE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A usage error: exits 2 (bad_request) with the message, like a daemon-side validation failure. */
export function usageError(message: string): ErrorResponse {
  return new ErrorResponse('bad_request', message);
}

/** Throw a clear bad_request for a name the daemon would refuse anyway. */
export function checkVmName(name: string): void {
  if (!VM_NAME.test(name)) {
    throw usageError(
      `invalid VM name "${name}": use lower-case letters, digits and dashes, starting with a letter or digit (at most 64)`,
    );
  }
}

/** The same for image and kernel names. */
export function checkResourceName(name: string, what: 'image' | 'kernel'): void {
  if (!RESOURCE_NAME.test(name)) {
    throw usageError(
      `invalid ${what} name "${name}": use letters, digits, dots, dashes and underscores, starting with a letter or digit (at most 64)`,
    );
  }
}

/**
 * A file named on the command line, as the absolute path the daemon needs (relative paths are
 * taken from the current directory). A missing file is a usage error here rather than a not_found
 * from the daemon, so the message can name the flag.
 */
export function hostFile(path: string, flag: string): string {
  const abs = resolve(path);
  let isFile: boolean;
  try {
    isFile = statSync(abs).isFile();
  } catch {
    throw usageError(`${flag} ${path}: no such file${abs !== path ? ` (${abs})` : ''}`);
  }
  if (!isFile) throw usageError(`${flag} ${path}: not a regular file`);
  return abs;
}

export interface FanOutOk<R> {
  name: string;
  ok: true;
  result: R;
  duration_ms: number;
}

export interface FanOutErr {
  name: string;
  ok: false;
  exit_code: number;
  error: { code: ErrorCode; message: string; op_id?: string };
  duration_ms: number;
}

export type FanOutResult<R> = FanOutOk<R> | FanOutErr;

function asErrorResponse(err: unknown): ErrorResponse {
  if (err instanceof ErrorResponse) return err;
  return new ErrorResponse('operation_failed', err instanceof Error ? err.message : String(err));
}

/**
 * Call fn once per distinct name, all at once. Each outcome is handed to onDone as soon as it is
 * known (so slow stops report as they finish), and all of them are returned in argument order.
 * An unreachable daemon is not a per-name failure: it is rethrown once.
 */
export async function fanOut<R>(
  names: readonly string[],
  fn: (name: string) => Promise<R>,
  onDone?: (r: FanOutResult<R>) => void,
): Promise<FanOutResult<R>[]> {
  const distinct = [...new Set(names)];
  let unreachable: ConnectError | undefined;
  const results = await Promise.all(
    distinct.map(async (name): Promise<FanOutResult<R>> => {
      const t0 = performance.now();
      let out: FanOutResult<R>;
      try {
        const result = await fn(name);
        out = { name, ok: true, result, duration_ms: Math.round(performance.now() - t0) };
      } catch (err) {
        if (err instanceof ConnectError) {
          unreachable ??= err;
          throw err;
        }
        const e = asErrorResponse(err);
        out = {
          name,
          ok: false,
          exit_code: exitCodeFor(e.code),
          error: { code: e.code, message: e.bareMessage, ...(e.opId ? { op_id: e.opId } : {}) },
          duration_ms: Math.round(performance.now() - t0),
        };
      }
      onDone?.(out);
      return out;
    }),
  ).catch((err: unknown) => {
    throw unreachable ?? err;
  });
  return results;
}

/** 0 when every call succeeded; else the failures' shared exit code, or operation_failed's when they differ. */
export function fanOutExitCode(results: readonly FanOutResult<unknown>[]): number {
  const codes = new Set(results.filter((r): r is FanOutErr => !r.ok).map((r) => r.exit_code));
  if (codes.size === 0) return 0;
  if (codes.size === 1) return [...codes][0]!;
  return ERROR_CODES.operation_failed.exit;
}

/** Whether a message already names `name` as a whole word (names are [A-Za-z0-9._-]). */
export function mentionsName(message: string, name: string): boolean {
  const esc = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^A-Za-z0-9._-])${esc}($|[^A-Za-z0-9_-])`).test(message);
}

/**
 * The stderr line of a failed call: `error: NAME: message (op-…)`, without the `NAME:` prefix when
 * the daemon's message already names it (`vm "demo" is not running`), so the name appears once.
 */
export function fanOutErrorLine(r: FanOutErr): string {
  const text = mentionsName(r.error.message, r.name) ? r.error.message : `${r.name}: ${r.error.message}`;
  return `error: ${text}${r.error.op_id ? ` (${r.error.op_id})` : ''}`;
}

/** What a fan-out command needs from its command: a line printer (quiet under --json) and the mode. */
export interface FanOutIo {
  say: (line: string) => void;
  json: boolean;
}

/**
 * The whole of a multi-name command: run fn for each name concurrently, print one line per name as
 * it finishes (successes on stdout via describe, failures on stderr with their op id), set the exit
 * code when any failed, and return every outcome (the --json output).
 */
export async function fanOutCommand<R>(
  io: FanOutIo,
  names: readonly string[],
  fn: (name: string) => Promise<R>,
  describe: (r: FanOutOk<R>) => string,
): Promise<FanOutResult<R>[]> {
  const results = await fanOut(names, fn, (r) => {
    if (r.ok) io.say(describe(r));
    else if (!io.json) process.stderr.write(`${fanOutErrorLine(r)}\n`);
  });
  const code = fanOutExitCode(results);
  if (code !== 0) process.exitCode = code;
  return results;
}

/** The names a variadic NAME... arg collected (oclif hands them over in argv). */
export function namesFrom(argv: readonly unknown[]): string[] {
  return argv.filter((a): a is string => typeof a === 'string');
}

/** An error for a flag's parse function: oclif prints it under "Parsing --flag" and exits 2 (usage). */
export function flagError(message: string): Error {
  return Object.assign(new Error(message), { oclif: { exit: ERROR_CODES.bad_request.exit } });
}
