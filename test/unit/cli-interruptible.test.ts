import { afterEach, describe, expect, it } from 'vitest';
import { EXIT_INTERRUPTED } from '../../src/cli/exit-codes.ts';
import { untilInterrupted } from '../../src/cli/interruptible.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';

/** A call that ends only when its signal is aborted, as a follow does (the client says canceled). */
const follow = (signal: AbortSignal): Promise<string> =>
  new Promise((_, reject) =>
    signal.addEventListener('abort', () => reject(new ErrorResponse('canceled', 'canceled')), { once: true }),
  );

describe('untilInterrupted (vm logs -f, vm egress -f, kernel pull)', () => {
  const before = process.exitCode;
  afterEach(() => {
    process.exitCode = before;
  });

  it('returns the result, leaves the exit code and removes its SIGINT handler', async () => {
    const listeners = process.listenerCount('SIGINT');
    await expect(untilInterrupted(async () => 'done')).resolves.toBe('done');
    expect(process.listenerCount('SIGINT')).toBe(listeners);
    expect(process.exitCode).toBe(before);
  });

  it('a SIGINT aborts the call: undefined, onInterrupted told, exit code EXIT_INTERRUPTED', async () => {
    const listeners = process.listenerCount('SIGINT');
    let told = 0;
    const p = untilInterrupted(follow, () => told++);
    expect(process.listenerCount('SIGINT')).toBe(listeners + 1);
    process.emit('SIGINT', 'SIGINT');
    await expect(p).resolves.toBeUndefined();
    expect(told).toBe(1);
    expect(process.exitCode).toBe(EXIT_INTERRUPTED);
    expect(process.listenerCount('SIGINT')).toBe(listeners);
  });

  it('a canceled error without a SIGINT, or any other error, is thrown', async () => {
    await expect(
      untilInterrupted(async () => {
        throw new ErrorResponse('canceled', 'by the daemon');
      }),
    ).rejects.toThrow('by the daemon');
    const p = untilInterrupted(async (signal) => {
      await follow(signal).catch(() => undefined);
      throw new Error('boom');
    });
    process.emit('SIGINT', 'SIGINT');
    await expect(p).rejects.toThrow('boom');
    expect(process.exitCode).toBe(before);
  });
});
