// A streaming call that Ctrl-C ends (vm logs -f, vm egress -f, kernel pull): SIGINT aborts the
// call instead of killing banger, and the `canceled` error that follows is the normal end of it.
import { ErrorResponse } from '../rpc/errors.ts';
import { EXIT_INTERRUPTED } from './exit-codes.ts';

/**
 * Run `call` with a signal that the first SIGINT aborts. Its result, or, when it failed with
 * `canceled` after a SIGINT, undefined (`onInterrupted` is told first; the exit code becomes
 * EXIT_INTERRUPTED). Any other failure is thrown. The SIGINT handler is gone when it returns.
 */
export async function untilInterrupted<T>(
  call: (signal: AbortSignal) => Promise<T>,
  onInterrupted?: () => void,
): Promise<T | undefined> {
  const abort = new AbortController();
  let interrupted = false;
  const onSigint = (): void => {
    interrupted = true;
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    return await call(abort.signal);
  } catch (err) {
    if (!(interrupted && err instanceof ErrorResponse && err.code === 'canceled')) throw err;
    onInterrupted?.();
    process.exitCode = EXIT_INTERRUPTED;
    return undefined;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
