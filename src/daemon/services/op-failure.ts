// How an image build, an image pull or a kernel pull that threw ends: its step marked failed,
// the error it ends with (the cancel's own when it was canceled), its staging directory removed.
import { rm } from 'node:fs/promises';
import type { Logger } from '../../log/logger.ts';
import type { OperationTracker } from '../../ops/operations.ts';
import { ErrorResponse, toErrorResponse } from '../../rpc/errors.ts';

export interface OpFailure {
  error: ErrorResponse;
  canceled: boolean;
}

/**
 * Mark the operation's current step failed and say what it ends with: when it was canceled, the
 * abort's reason (or a plain `<what> canceled`); else `err` as the wire sees it.
 */
export function failStep(tracker: OperationTracker, err: unknown, what: string): OpFailure {
  const canceled = tracker.signal.aborted;
  const reason: unknown = tracker.signal.reason;
  const error = canceled
    ? reason instanceof ErrorResponse
      ? reason
      : new ErrorResponse('canceled', `${what} canceled`)
    : toErrorResponse(err, tracker.op.id);
  tracker.stepFail(undefined, canceled ? 'canceled' : error.bareMessage);
  return { error, canceled };
}

/** Remove a failed operation's staging directory, if it has one; a failure to is logged. */
export async function removeStaging(dir: string | undefined, log: Logger, message: string): Promise<void> {
  if (dir === undefined) return;
  await rm(dir, { recursive: true, force: true }).catch((err: unknown) => log.error({ err, dir }, message));
}
