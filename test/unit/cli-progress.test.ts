import { describe, expect, it } from 'vitest';
import type { Operation, Step } from '../../generated/types.gen.ts';
import {
  failedCreateHint,
  failedStep,
  PlainProgress,
  renderSteps,
  watchOperation,
  type ProgressStream,
} from '../../src/cli/progress.ts';
import { stripAnsi } from '../../src/cli/format.ts';

const T = Date.parse('2026-01-14T09:31:00.000Z');
const at = (ms: number): string => new Date(T + ms).toISOString();

function op(steps: Step[], over: Partial<Operation> = {}): Operation {
  return {
    id: 'op-3f9a1c07b2d4',
    kind: 'vm.create',
    method: 'vm.create.begin',
    state: 'running',
    started_at: at(0),
    vm: 'calm-otter',
    steps,
    ...over,
  };
}

const running = op([
  { name: 'resolve_image', state: 'done', started_at: at(0), duration_ms: 3 },
  { name: 'prepare_disk', state: 'done', started_at: at(3), duration_ms: 12 },
  { name: 'boot', state: 'running', started_at: at(15), detail: 'qemu pid 4242' },
  { name: 'wait_ssh', state: 'pending' },
]);

describe('renderSteps', () => {
  it('a running operation: header with elapsed and op id, one line per step', () => {
    const lines = renderSteps(running, T + 1215, { title: 'Creating calm-otter' });
    expect(lines).toEqual([
      'Creating calm-otter  1.2 s  op-3f9a1c07b2d4',
      '  ✓ resolve_image      3 ms',
      '  ✓ prepare_disk      12 ms',
      `  ${lines[3]!.slice(2, 3)} boot              1.2 s  qemu pid 4242`,
      '  · wait_ssh',
    ]);
    // the spinner frame comes from the clock
    expect(lines[3]!.slice(2, 3)).toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]/);
    expect(renderSteps(running, T + 1215 + 80)[3]).not.toBe(renderSteps(running, T + 1215)[3]);
  });

  it('a failed operation: ✗ with the detail, undone steps marked, no spinner', () => {
    const failed = op(
      [
        { name: 'prepare_disk', state: 'undone', started_at: at(0), duration_ms: 12 },
        {
          name: 'boot',
          state: 'failed',
          started_at: at(12),
          duration_ms: 1200,
          detail: 'qemu exited with status 1',
        },
      ],
      {
        state: 'failed',
        ended_at: at(1300),
        error: { code: 'operation_failed', message: 'qemu exited with status 1' },
      },
    );
    expect(renderSteps(failed, T + 99_999, { title: 'Creating calm-otter' })).toEqual([
      'Creating calm-otter failed  1.3 s  op-3f9a1c07b2d4',
      '  ↺ prepare_disk     12 ms  undone',
      '  ✗ boot             1.2 s  qemu exited with status 1',
    ]);
    expect(failedStep(failed)?.name).toBe('boot');
  });

  it('colour only when asked; details are cut to the width', () => {
    expect(renderSteps(running, T + 100).join('\n')).not.toContain('\x1b[');
    const colored = renderSteps(running, T + 100, { color: true });
    expect(colored.join('\n')).toContain('\x1b[32m✓\x1b[0m');
    expect(colored.map(stripAnsi)).toEqual(renderSteps(running, T + 100));
    const narrow = renderSteps(
      op([{ name: 'boot', state: 'running', started_at: at(0), detail: 'x'.repeat(200) }]),
      T + 10,
      { width: 40 },
    );
    expect([...narrow[1]!].length).toBeLessThan(40);
    expect(narrow[1]).toMatch(/x…$/);
    // too narrow for the op id: the header drops it rather than wrap
    expect(renderSteps(running, T + 100, { title: 'Creating calm-otter', width: 40 })[0]).toBe(
      'Creating calm-otter  100 ms',
    );
  });
});

describe('PlainProgress', () => {
  it('a step name that comes back (warm start fell back to a cold boot) is its own step', () => {
    const p = new PlainProgress();
    const first = [
      { name: 'prepare_disk', state: 'undone' as const, started_at: at(0), duration_ms: 20 },
      { name: 'restore', state: 'undone' as const, started_at: at(20), duration_ms: 800 },
      { name: 'reidentify', state: 'failed' as const, started_at: at(820), duration_ms: 300, detail: 'boom' },
      { name: 'warm_fallback', state: 'done' as const, started_at: at(1120), duration_ms: 0 },
      { name: 'prepare_disk', state: 'done' as const, started_at: at(1120), duration_ms: 22 },
    ];
    const lines = p.update(op(first), T + 1200);
    expect(lines.filter((l) => l.includes('prepare_disk'))).toEqual([
      expect.stringContaining('prepare_disk undone'),
      '[  1.1s] prepare_disk done (22 ms)',
    ]);
    // Nothing changed: nothing printed again (the two prepare_disk steps do not flap).
    expect(p.update(op(first), T + 1300)).toEqual([]);
  });

  it('one line per transition, with elapsed time from the start of the operation', () => {
    const p = new PlainProgress();
    expect(p.update(op([{ name: 'resolve_image', state: 'running', started_at: at(0) }]), T + 1)).toEqual([
      '[  0.0s] resolve_image started',
    ]);
    // nothing changed: nothing printed
    expect(p.update(op([{ name: 'resolve_image', state: 'running', started_at: at(0) }]), T + 300)).toEqual(
      [],
    );
    // a step that started and finished between two polls gets only its "done" line
    expect(p.update(running, T + 1200)).toEqual([
      '[  0.0s] resolve_image done (3 ms)',
      '[  0.0s] prepare_disk done (12 ms)',
      '[  0.0s] boot started: qemu pid 4242',
    ]);
    const done = op(
      [
        { name: 'resolve_image', state: 'done', started_at: at(0), duration_ms: 3 },
        { name: 'prepare_disk', state: 'done', started_at: at(3), duration_ms: 12 },
        { name: 'boot', state: 'done', started_at: at(15), duration_ms: 1200 },
        { name: 'wait_ssh', state: 'done', started_at: at(1215), duration_ms: 2100 },
      ],
      { state: 'succeeded', ended_at: at(3315) },
    );
    expect(p.update(done, T + 3400)).toEqual([
      '[  1.2s] boot done (1.2 s)',
      '[  3.3s] wait_ssh done (2.1 s)',
      '[  3.3s] succeeded',
    ]);
    // the end is reported once
    expect(p.update(done, T + 3500)).toEqual([]);
  });

  it('failures carry their detail; undo and cancel are reported', () => {
    const p = new PlainProgress();
    p.update(running, T + 100);
    const failed = op(
      [
        { name: 'resolve_image', state: 'undone', started_at: at(0), duration_ms: 3 },
        { name: 'prepare_disk', state: 'undone', started_at: at(3), duration_ms: 12 },
        { name: 'boot', state: 'failed', started_at: at(15), duration_ms: 1200, detail: 'qemu exited' },
      ],
      {
        state: 'failed',
        ended_at: at(1300),
        error: { code: 'operation_failed', message: 'boot failed: qemu exited' },
      },
    );
    expect(p.update(failed, T + 1400)).toEqual([
      '[  1.4s] resolve_image undone',
      '[  1.4s] prepare_disk undone',
      '[  1.2s] boot failed (1.2 s): qemu exited',
      '[  1.3s] failed: boot failed: qemu exited',
    ]);
    const c = new PlainProgress();
    expect(c.update(op([], { state: 'canceled', ended_at: at(500) }), T + 600)).toEqual([
      '[  0.5s] canceled',
    ]);
  });

  it('detail updates of a long step are throttled', () => {
    const p = new PlainProgress({ detailEveryMs: 1000 });
    const step = (detail: string): Operation =>
      op([{ name: 'rootfs.bootstrap', state: 'running', started_at: at(0), detail }]);
    expect(p.update(step('1/300'), T)).toEqual(['[  0.0s] rootfs.bootstrap started: 1/300']);
    expect(p.update(step('2/300'), T + 250)).toEqual([]);
    expect(p.update(step('3/300'), T + 1000)).toEqual(['[  1.0s] rootfs.bootstrap: 3/300']);
    expect(p.update(step('3/300'), T + 2500)).toEqual([]);
    expect(p.update(step('9/300'), T + 2600)).toEqual(['[  2.6s] rootfs.bootstrap: 9/300']);
  });
});

class FakeStream implements ProgressStream {
  out = '';
  isTTY: boolean;
  columns = 80;
  constructor(tty: boolean) {
    this.isTTY = tty;
  }
  write(s: string): boolean {
    this.out += s;
    return true;
  }
}

/** A poll that walks through the given operations, then repeats the last. */
function script(ops: Operation[]): () => Promise<{ operation: Operation }> {
  let i = 0;
  return async () => ({ operation: ops[Math.min(i++, ops.length - 1)]! });
}

describe('watchOperation', () => {
  const finished = op([{ name: 'boot', state: 'done', started_at: at(0), duration_ms: 5 }], {
    state: 'succeeded',
    started_at: new Date().toISOString(),
    ended_at: new Date().toISOString(),
  });

  it('plain mode: the title, then transition lines, until the operation ends', async () => {
    const stream = new FakeStream(false);
    const w = await watchOperation(script([op([]), running, finished]), {
      title: 'Creating calm-otter',
      stream,
      intervalMs: 1,
    });
    expect(w.interrupted).toBe(false);
    expect(w.last.operation.state).toBe('succeeded');
    expect(stream.out).toMatch(/^Creating calm-otter\n/);
    expect(stream.out).toMatch(/boot started: qemu pid 4242\n/);
    expect(stream.out).toMatch(/succeeded\n$/);
  });

  it('tty mode: hides the cursor, redraws in place, shows it again', async () => {
    const stream = new FakeStream(true);
    await watchOperation(script([running, running, finished]), {
      title: 'Creating calm-otter',
      stream,
      intervalMs: 1,
    });
    expect(stream.out.startsWith('\x1b[?25l')).toBe(true);
    expect(stream.out).toContain('\x1b[5F\x1b[J'); // moved up over the 5 lines drawn before
    expect(stream.out.endsWith('\x1b[?25h')).toBe(true);
    expect(stream.out).toContain('Creating calm-otter done');
  });

  it('Ctrl-C asks for a cancel once and waits for the operation to end', async () => {
    const stream = new FakeStream(false);
    let cancels = 0;
    let canceled = false;
    const poll = async (): Promise<{ operation: Operation }> => {
      if (canceled) return { operation: op([], { state: 'canceled', ended_at: new Date().toISOString() }) };
      setImmediate(() => process.emit('SIGINT'));
      return { operation: running };
    };
    const w = await watchOperation(poll, {
      title: 'Creating calm-otter',
      stream,
      intervalMs: 10_000, // a Ctrl-C must wake the wait
      cancel: async () => {
        cancels += 1;
        canceled = true;
      },
    });
    expect(cancels).toBe(1);
    expect(w.interrupted).toBe(true);
    expect(w.last.operation.state).toBe('canceled');
    expect(stream.out).toMatch(/canceling op-3f9a1c07b2d4/);
    expect(process.listenerCount('SIGINT')).toBe(0);
  });

  it('a cancel refused with conflict (it already finished) is not an error', async () => {
    let n = 0;
    const poll = async (): Promise<{ operation: Operation }> => {
      n += 1;
      if (n === 1) {
        setImmediate(() => process.emit('SIGINT'));
        return { operation: running };
      }
      return { operation: finished };
    };
    const w = await watchOperation(poll, {
      title: 't',
      stream: new FakeStream(false),
      intervalMs: 10_000,
      cancel: async () => {
        throw Object.assign(new Error('already succeeded'), { code: 'conflict' });
      },
    });
    expect(w.last.operation.state).toBe('succeeded');
    expect(w.interrupted).toBe(true);
    expect(w.cancelError).toBeInstanceOf(Error);
  });

  it('without a cancel, Ctrl-C just stops watching', async () => {
    const poll = async (): Promise<{ operation: Operation }> => {
      setImmediate(() => process.emit('SIGINT'));
      return { operation: running };
    };
    const w = await watchOperation(poll, { title: 't', stream: new FakeStream(false), intervalMs: 10_000 });
    expect(w.interrupted).toBe(true);
    expect(w.last.operation.state).toBe('running');
  });
});

describe('failedCreateHint', () => {
  it('an undone create points at op trace, never at vm logs (its record is gone)', () => {
    expect(failedCreateHint('banger', 'op-abc123', undefined)).toBe(
      '  the create was undone; its boot console and log lines: banger op trace op-abc123',
    );
  });
  it('a VM whose record survived has its own console too', () => {
    const h = failedCreateHint('banger', 'op-abc123', 'demo');
    expect(h).toContain('banger vm logs demo');
    expect(h).toContain('banger op trace op-abc123');
  });
});
