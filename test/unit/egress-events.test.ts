// EgressEvents' op id: read from the store once per VM (not per event), then kept current by
// setOpId (vm set --egress) and forget (vm delete).
import { describe, expect, it } from 'vitest';
import { EgressEvents, type EgressEvent } from '../../src/egress/events.ts';
import { createLogger } from '../../src/log/logger.ts';
import { MemoryLog } from '../helpers/logs.ts';

const ev = (vm: string, op_id?: string): EgressEvent => ({
  time: new Date(0).toISOString(),
  vm,
  verdict: 'deny',
  proto: 'tcp',
  ip: '192.0.2.1',
  port: 443,
  reason: 'no rule allows it',
  ...(op_id ? { op_id } : {}),
});

describe('EgressEvents op id', () => {
  it('asks the store once per VM, not once per event; setOpId and forget keep it current', () => {
    const rows = new Map<string, string | null>([
      ['calm-otter', 'op-000000000001'],
      ['old-row', null],
    ]);
    const asked: string[] = [];
    const e = new EgressEvents({
      log: createLogger({ name: 't', stream: new MemoryLog() }),
      opIdOf: (vm) => {
        asked.push(vm);
        return rows.get(vm);
      },
    });
    for (let i = 0; i < 50; i++) e.recordEgress(ev('calm-otter'));
    expect(asked).toEqual(['calm-otter']);
    expect(e.recent('calm-otter', 1)[0]?.op_id).toBe('op-000000000001');

    // vm set --egress: the new op id at once, still without reading the row.
    rows.set('calm-otter', 'op-000000000002');
    e.setOpId('calm-otter', 'op-000000000002');
    e.recordEgress(ev('calm-otter', 'op-00000000000f'));
    expect(e.recent('calm-otter', 1)[0]?.op_id).toBe('op-000000000002');
    expect(asked).toEqual(['calm-otter']);

    // A row without an op id is cached too: the enforcer's own id is used.
    e.recordEgress(ev('old-row', 'op-0000000000aa'));
    e.recordEgress(ev('old-row', 'op-0000000000aa'));
    expect(e.recent('old-row', 1)[0]?.op_id).toBe('op-0000000000aa');
    expect(asked.filter((v) => v === 'old-row')).toHaveLength(1);

    // No row yet: asked again next time (its create may record it meanwhile).
    e.recordEgress(ev('new-vm'));
    rows.set('new-vm', 'op-000000000003');
    e.recordEgress(ev('new-vm'));
    expect(e.recent('new-vm', 2).map((x) => x.op_id)).toEqual([undefined, 'op-000000000003']);

    // Deleted and created again under the same name: the new row's op id.
    e.forget('calm-otter');
    rows.set('calm-otter', 'op-000000000004');
    e.recordEgress(ev('calm-otter'));
    expect(e.recent('calm-otter')).toHaveLength(1);
    expect(e.recent('calm-otter')[0]?.op_id).toBe('op-000000000004');
  });
});
