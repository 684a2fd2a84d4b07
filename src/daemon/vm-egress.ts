// vm.egress with `follow`: the recent events first, then each new one as the enforcers record
// it, until the client hangs up (the call's signal aborts) or the VM is deleted.
import { setTimeout as sleep } from 'node:timers/promises';
import type { VmEgressFrame } from '../../generated/types.gen.ts';
import type { EgressEvent, EgressEvents } from '../egress/events.ts';

/** How often a follow checks that the VM still exists while no event comes. */
const GONE_POLL_MS = 1000;

export async function* followEgress(
  events: Pick<EgressEvents, 'watch'>,
  vm: string,
  recent: EgressEvent[],
  signal: AbortSignal,
  gone: () => boolean,
): AsyncGenerator<VmEgressFrame> {
  const queue: EgressEvent[] = [];
  let wake: (() => void) | undefined;
  // Subscribed before the recent ones go out: nothing recorded meanwhile is lost.
  const unwatch = events.watch(vm, (ev) => {
    queue.push(ev);
    wake?.();
  });
  try {
    for (const ev of recent) yield { event: ev };
    while (!signal.aborted) {
      const ev = queue.shift();
      if (ev) {
        yield { event: ev };
        continue;
      }
      if (gone()) return;
      const ac = new AbortController();
      const onAbort = (): void => ac.abort();
      signal.addEventListener('abort', onAbort, { once: true });
      wake = (): void => ac.abort();
      await sleep(GONE_POLL_MS, undefined, { signal: ac.signal }).catch(() => undefined);
      wake = undefined;
      signal.removeEventListener('abort', onAbort);
    }
  } finally {
    unwatch();
  }
}
