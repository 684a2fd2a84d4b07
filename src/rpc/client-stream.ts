// A streaming call as an async iterator: the transport hands frames to a callback; callers want
// `for await (const frame of ...)`. Frames are queued until read; the call's final result is a
// separate promise. Leaving the loop early aborts the call, so the server stops streaming.
// Pure JavaScript (no node modules): the generated client imports it.

/** The frames of a streaming call, then its final result. */
export interface FrameStream<F, R> extends AsyncIterable<F> {
  /** The final result; rejects like the call (ErrorResponse), also after an early break (`canceled`). */
  readonly result: Promise<R>;
}

type Start = (onFrame: (frame: unknown) => void, signal: AbortSignal) => Promise<unknown>;

export function frameStream<F, R>(userSignal: AbortSignal | undefined, start: Start): FrameStream<F, R> {
  const abort = new AbortController();
  const signal = userSignal ? AbortSignal.any([userSignal, abort.signal]) : abort.signal;
  const frames: F[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  let failure: { error: unknown } | undefined;
  const notify = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const result = start((frame) => {
    frames.push(frame as F);
    notify();
  }, signal).then(
    (r) => {
      ended = true;
      notify();
      return r as R;
    },
    (error: unknown) => {
      ended = true;
      failure = { error };
      notify();
      throw error;
    },
  );
  // The iterator reports the failure; a caller that never reads `result` must not crash the process.
  result.catch(() => undefined);
  return {
    result,
    async *[Symbol.asyncIterator](): AsyncGenerator<F, void, undefined> {
      try {
        for (;;) {
          const next = frames.shift();
          if (next !== undefined) {
            yield next;
            continue;
          }
          if (failure) throw failure.error;
          if (ended) return;
          await new Promise<void>((resolve) => (wake = resolve));
        }
      } finally {
        // A break (or a throw in the loop body) before the end: stop the call.
        if (!ended) abort.abort();
      }
    },
  };
}
