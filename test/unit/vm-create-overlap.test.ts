import { describe, expect, it } from 'vitest';
import { runOverlapped } from '../../src/vm/create.ts';

const tick = (ms = 5): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A second task that records how it ran and ends when told or when stopped. */
function second(log: string[], opts: { fail?: boolean } = {}) {
  return async (stop: AbortSignal, started: 'early' | 'after'): Promise<void> => {
    log.push(`second ${started}`);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        log.push('second done');
        if (opts.fail) reject(new Error('ssh failed'));
        else resolve();
      }, 30);
      stop.addEventListener('abort', () => {
        clearTimeout(t);
        log.push('second stopped');
        reject(new Error('canceled'));
      });
    });
  };
}

describe('runOverlapped (a warm clone: reidentify, and the first ssh beside its end)', () => {
  it('starts the second at go, beside the rest of the first; settles when both did', async () => {
    const log: string[] = [];
    await runOverlapped(async (go) => {
      log.push('first begins');
      await tick();
      go();
      await tick();
      log.push('first done');
    }, second(log));
    expect(log).toEqual(['first begins', 'second early', 'first done', 'second done']);
  });

  it('without go, the second starts once the first succeeded', async () => {
    const log: string[] = [];
    await runOverlapped(async () => {
      await tick();
      log.push('first done');
    }, second(log));
    expect(log).toEqual(['first done', 'second after', 'second done']);
  });

  it('a first that fails after go stops the second, waits for it, and throws its own error', async () => {
    const log: string[] = [];
    const err = await runOverlapped(async (go) => {
      go();
      await tick();
      throw new Error('reidentify failed');
    }, second(log)).catch((e: unknown) => e);
    expect((err as Error).message).toBe('reidentify failed');
    expect(log).toEqual(['second early', 'second stopped']);
  });

  it('a first that fails before go never starts the second', async () => {
    const log: string[] = [];
    await expect(
      runOverlapped(async () => {
        await tick();
        throw new Error('no agent');
      }, second(log)),
    ).rejects.toThrow('no agent');
    await tick(50);
    expect(log).toEqual([]);
  });

  it('a second that fails is thrown only after the first settled', async () => {
    const log: string[] = [];
    const err = await runOverlapped(
      async (go) => {
        go();
        await tick(60);
        log.push('first done');
      },
      second(log, { fail: true }),
    ).catch((e: unknown) => e);
    expect((err as Error).message).toBe('ssh failed');
    expect(log).toEqual(['second early', 'second done', 'first done']);
  });
});
