// A missing relay binary refuses a new user-mode VMM under a policy, but not the reattach of one
// that runs already (a daemon restart): that is warned about, and the VM is attached anyway.
import { describe, expect, it, vi } from 'vitest';
import { proxyHooks } from '../../src/egress/side.ts';
import type { EgressEvents } from '../../src/egress/events.ts';
import type { EgressProxy } from '../../src/egress/proxy.ts';
import { parseEgress } from '../../src/egress/rules.ts';
import type { VmRow } from '../../src/store/index.ts';
import { attachEgress } from '../../src/vm/machine.ts';
import { createLogger } from '../../src/log/logger.ts';
import { MemoryLog } from '../helpers/logs.ts';

vi.mock('../../src/egress/relay.ts', async (orig) => ({
  ...(await orig<object>()),
  assertRelayBuilt: (): void => {
    throw new Error('the egress relay /x/build/egress-relay is missing or not executable');
  },
  relayBuilt: (): boolean => false,
}));

const vm = {
  id: 'vm1',
  name: 'one',
  networkMode: 'user',
  egress: parseEgress('allow=api.test'),
  secrets: [],
} as unknown as VmRow;

function setup(): { hooks: ReturnType<typeof proxyHooks>; attached: string[] } {
  const attached: string[] = [];
  const proxy = { attach: (a: { id: string }) => void attached.push(a.id) } as unknown as EgressProxy;
  const hooks = proxyHooks({ proxy }, {} as EgressEvents);
  return { hooks, attached };
}

describe('the relay check on attach', () => {
  it('a new VMM (no running flag) is refused without the relay', () => {
    const { hooks, attached } = setup();
    expect(() => hooks.attach(vm)).toThrow(/egress relay .* missing/);
    expect(attached).toEqual([]);
  });

  it('a reattach goes on without the relay, with a warning', async () => {
    const { hooks, attached } = setup();
    const mem = new MemoryLog();
    const log = createLogger({ name: 't', level: 'debug', stream: mem });
    expect(() => attachEgress({ egress: hooks, log }, vm, { running: true })).not.toThrow();
    expect(attached).toEqual(['vm1']);
    await vi.waitFor(() => expect(mem.lines.join('\n')).toMatch(/egress relay is missing/));
  });
});
