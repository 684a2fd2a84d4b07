// Waiting for an asynchronous operation (vm.create, image.build, image.warm): poll its status
// method until the operation ends. A failed or canceled operation rejects with ErrorResponse
// carrying the operation's code and id, like a unary call. No node modules: the generated client
// imports it.
import type { Operation } from '../../generated/types.gen.ts';
import { ErrorResponse, isErrorCode } from './client-errors.ts';

export interface WaitOptions<S> {
  /** Called with every status polled, the last one included. */
  onProgress?: (status: S) => void;
  /** Stop waiting (the operation itself goes on; cancel it with its `*.cancel` method). */
  signal?: AbortSignal;
  /** Time between polls (default 250 ms). */
  intervalMs?: number;
}

/** Poll until the operation ends; resolve with the last status when it succeeded. */
export async function waitForOperation<S extends { operation: Operation }>(
  poll: (signal: AbortSignal | undefined) => Promise<S>,
  options: WaitOptions<S> = {},
): Promise<S> {
  for (;;) {
    const status = await poll(options.signal);
    options.onProgress?.(status);
    const op = status.operation;
    if (op.state === 'succeeded') return status;
    if (op.state === 'failed' || op.state === 'canceled') throw operationError(op, status);
    await sleep(options.intervalMs ?? 250, options.signal);
  }
}

/** The error a failed or canceled operation ends with; `data` is the last status. */
export function operationError(op: Operation, status: unknown): ErrorResponse {
  const code =
    op.state === 'canceled' ? 'canceled' : isErrorCode(op.error?.code) ? op.error.code : 'operation_failed';
  const message = op.error?.message ?? `${op.kind} ${op.state}`;
  return new ErrorResponse(code, message, { opId: op.id, data: status });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const aborted = (): ErrorResponse => new ErrorResponse('canceled', 'wait canceled');
    if (signal?.aborted) return reject(aborted());
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(aborted());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
