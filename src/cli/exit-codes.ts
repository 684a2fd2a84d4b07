// CLI exit codes: one per wire error code (from the schema), plus the CLI's own.
import { ERROR_CODES, type ErrorCode } from '../../generated/errors.gen.ts';

/** The daemon could not be reached at all (EX_UNAVAILABLE). */
export const EXIT_UNREACHABLE = 69;
/** Interrupted by Ctrl-C. */
export const EXIT_INTERRUPTED = 130;

export function exitCodeFor(code: ErrorCode): number {
  return ERROR_CODES[code].exit;
}
