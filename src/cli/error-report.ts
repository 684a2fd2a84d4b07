// How a failed command ends: one line on stderr (ending with the op id) or the --json error object
// on stdout, and an exit code. Shared by every oclif command (base.ts) and the CLI's fast path
// (fast-path.ts), so it imports nothing from oclif, and the wire's client side plus the
// domain-error table (src/rpc/error-map.ts, no dependencies of its own).
import { ErrorResponse } from '../rpc/client-errors.ts';
import { ConnectError } from '../rpc/client-socket.ts';
import { DOMAIN_CODES, mapDomainError } from '../rpc/error-map.ts';
import { RemoteError } from '../rpc/ssh-transport.ts';
import { EXIT_UNREACHABLE, exitCodeFor } from './exit-codes.ts';

export interface CliErrorPayload {
  code: string;
  message: string;
  op_id?: string;
}

export interface CliErrorReport {
  exit: number;
  payload: CliErrorPayload;
}

/** The report for an error banger knows how to word; undefined for anything else. */
export function cliErrorReport(err: Error & { oclif?: { exit?: number } }): CliErrorReport | undefined {
  const rpc = rpcErrorReport(err);
  if (rpc) return rpc;
  if (isUsageError(err)) {
    // Flag and argument errors from oclif: same one-line shape as every other error.
    const lines = err.message
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^See more help/.test(l))
      .map((l) => l.replace(/:$/, ''));
    return { exit: 2, payload: { code: 'bad_request', message: `${lines.join(': ')} (see --help)` } };
  }
  return undefined;
}

/** The report for an error of the daemon or of reaching it; undefined for anything else. */
export function rpcErrorReport(err: unknown): CliErrorReport | undefined {
  if (err instanceof ErrorResponse) {
    return {
      exit: exitCodeFor(err.code),
      payload: { code: err.code, message: err.bareMessage, ...(err.opId ? { op_id: err.opId } : {}) },
    };
  }
  // A domain error the CLI met itself (e.g. `vm run` inspecting a work tree, a VM name checked
  // before any call): worded and coded by the same table the daemon uses, without an op id.
  if (err instanceof Error && Object.hasOwn(DOMAIN_CODES, err.name)) {
    const m = mapDomainError(err);
    return { exit: exitCodeFor(m.code), payload: { code: m.code, message: m.message } };
  }
  // A context's host (src/rpc/ssh-transport.ts): the message names it and says ssh's reason.
  if (err instanceof RemoteError) {
    return {
      exit: EXIT_UNREACHABLE,
      payload: { code: 'unreachable', message: err.message, ...(err.opId ? { op_id: err.opId } : {}) },
    };
  }
  if (err instanceof Error && err.name === 'ContextError') {
    return { exit: 2, payload: { code: 'bad_request', message: err.message } };
  }
  if (err instanceof ConnectError) {
    return {
      exit: EXIT_UNREACHABLE,
      payload: {
        code: 'unreachable',
        message: `${err.message}; is bangerd running? (start it with bin/bangerd, or see banger system install)`,
      },
    };
  }
  return undefined;
}

/** Set the exit code and print the report: the JSON object through `logJson`, else a line. */
export function writeCliError(
  r: CliErrorReport,
  out: { json: boolean; bin: string; logJson: (json: unknown) => void },
): void {
  process.exitCode = r.exit;
  if (out.json) {
    out.logJson({ ok: false, exit_code: r.exit, error: r.payload });
    return;
  }
  const suffix = r.payload.op_id ? ` (${r.payload.op_id})` : '';
  process.stderr.write(`error: ${r.payload.message}${suffix}\n`);
  // On a terminal, say how to see everything that happened under that id.
  if (r.payload.op_id && process.stderr.isTTY)
    process.stderr.write(`run: ${out.bin} op trace ${r.payload.op_id}\n`);
}

function isUsageError(err: Error & { oclif?: { exit?: number } }): boolean {
  return (
    err.oclif?.exit === 2 ||
    /^(Parsing --|Unexpected argument|Missing required|Nonexistent flag|Expected )/.test(err.message)
  );
}
