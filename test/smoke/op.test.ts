// Real-VM scenarios of `banger op`: a successful create's trace (every step with its duration, the
// console of the boot) and failed operations traced from the op id the CLI printed. A tap step
// fails in the root helper (TEST-ONLY BANGER_TEST_FAIL_VERB, see network.test.ts); boots fail in
// a second bangerd in the same namespace started with the TEST-ONLY fault hook
// BANGER_TEST_FAIL_STEP=wait_ready: its boots fail once the guest is ready, so the console of the
// failed operation's window is full.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OpSummary, OpTraceResult, Operation, TraceRecord, Vm } from '../../generated/types.gen.ts';
import {
  banger,
  bangerJson,
  BIN,
  inNetns,
  restartSmokeHelper,
  smokeEnv,
  uniqueName,
  type CmdResult,
} from './harness.ts';

const created: string[] = [];

afterAll(async () => {
  for (const n of created) await banger(['vm', 'delete', n]);
});

const stepRecs = (t: OpTraceResult): TraceRecord[] =>
  t.records.filter((r) => r.source === 'step' && typeof r.fields?.step === 'string');
const serialRecs = (t: OpTraceResult): TraceRecord[] => t.records.filter((r) => r.source === 'serial');
const daemonMsgs = (t: OpTraceResult): string[] =>
  t.records.filter((r) => r.source === 'daemon').map((r) => r.msg);

function expectTimeOrdered(t: OpTraceResult): void {
  const times = t.records.map((r) => Date.parse(r.time));
  expect(times).toEqual([...times].sort((a, b) => a - b));
}

describe('op trace of a successful create (the smoke daemon)', () => {
  it('shows every step with its duration, summing to within 10% of the total, and the boot console', async () => {
    const name = uniqueName('optr');
    created.push(name);
    const { operation } = await bangerJson<{ operation: Operation; vm: Vm }>([
      'vm',
      'create',
      '--name',
      name,
    ]);
    expect(operation.state).toBe('succeeded');

    const t = await bangerJson<OpTraceResult>(['op', 'trace', operation.id]);
    expect(t.op_id).toBe(operation.id);
    expect(t.summary).toMatchObject({ ok: true, kind: 'vm.create', state: 'succeeded', vm: name });
    const total = t.summary!.duration_ms!;
    const steps = stepRecs(t);
    expect(steps.map((s) => s.fields!.step)).toEqual(
      expect.arrayContaining(['resolve_image', 'record', 'prepare_disk', 'seed', 'boot', 'wait_ready']),
    );
    for (const s of steps) expect(typeof s.duration_ms).toBe('number');
    const sum = steps.reduce((n, s) => n + s.duration_ms!, 0);
    expect(Math.abs(total - sum)).toBeLessThanOrEqual(total * 0.1);

    // The daemon's lines of the create, one summary line for the RPC and one for the operation.
    const msgs = daemonMsgs(t);
    expect(msgs).toContain('rpc completed');
    expect(msgs).toContain('operation completed');
    // One line per step that ran (`step done`) or did not (`step skipped`: `warm`, no template).
    expect(msgs.filter((m) => m === 'step done' || m === 'step skipped').length).toBeGreaterThanOrEqual(
      steps.length,
    );

    // The console of the boot, inside the window: the host's marker, then the guest's kernel.
    const serial = serialRecs(t);
    expect(serial[0]!.msg).toBe(`banger: ${operation.id} vm.create begins`);
    expect(serial.some((r) => /Linux version/.test(r.msg))).toBe(true);
    for (const r of serial) {
      expect(r.in_window).toBe(true);
      expect(r.rel_ms).toBeGreaterThanOrEqual(0);
      expect(r.rel_ms).toBeLessThanOrEqual(total + 500);
    }
    const boot = steps.find((s) => s.fields!.step === 'boot')!;
    expect(serial[0]!.rel_ms).toBeGreaterThanOrEqual(boot.rel_ms);
    expectTimeOrdered(t);

    // The human timeline, and the list finds the create by VM and kind.
    const human = await banger(['op', 'trace', operation.id]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/\+\s*\d+\.\d{3}s {2}step {4}wait_ready done.* \(\d+\.\d s\)\n/);
    expect(human.stdout).toMatch(
      new RegExp(`serial {2}${name} │ banger: ${operation.id} vm\\.create begins`),
    );
    const listed = await bangerJson<OpSummary[]>(['op', 'list', '--vm', name, '--method', 'vm.create']);
    expect(listed.map((o) => o.op_id)).toContain(operation.id);
  });

  it("a daemon status call's trace holds the root helper's line (the helper names its log file)", async () => {
    const env = smokeEnv() as ReturnType<typeof smokeEnv> & { helperSocket?: string };
    if (!env.helperSocket || !existsSync(env.helperSocket)) return; // the smoke world runs no helper
    expect((await banger(['daemon', 'status'])).code).toBe(0);
    const [last] = await bangerJson<OpSummary[]>(['op', 'list', '--method', 'daemon.status', '--limit', '1']);
    const t = await bangerJson<OpTraceResult>(['op', 'trace', last!.op_id]);
    expect(t.notes).toEqual([]);
    const h = t.records.find((r) => r.source === 'helper' && r.msg === 'helper rpc completed');
    expect(h?.fields).toMatchObject({ method: 'priv.ping' });
    expect(typeof h?.duration_ms).toBe('number');
    const d = t.records.find((r) => r.source === 'daemon' && r.msg === 'rpc completed');
    // The helper logs its summary just after answering, so its line may trail the daemon's by a
    // moment; both fall inside the call.
    expect(h!.rel_ms).toBeGreaterThanOrEqual(0);
    expect(h!.rel_ms).toBeLessThanOrEqual(d!.rel_ms + 100);
    expectTimeOrdered(t);
  });
});

describe('op trace of a create whose tap step fails in the root helper (the smoke daemon)', () => {
  it("shows the CLI's error, the helper's `helper rpc failed` line, the failed network step, all under one id", async () => {
    const env = smokeEnv() as ReturnType<typeof smokeEnv> & { helperSocket?: string };
    if (!env.helperSocket || !existsSync(env.helperSocket)) return; // the smoke world runs no helper
    await restartSmokeHelper({ BANGER_TEST_FAIL_VERB: 'priv.create_tap' });
    try {
      const name = uniqueName('optap');
      const r = await banger(['vm', 'create', '--name', name, '--network', 'bridge']);
      expect(r.code).toBe(1);
      const m = /^error: (.*) \((op-[0-9a-f]+)\)$/m.exec(r.stderr);
      expect(m, r.stderr).not.toBeNull();
      const [, cliMessage, opId] = m!;
      expect(cliMessage).toContain('injected test fault at priv.create_tap');

      const t = await bangerJson<OpTraceResult>(['op', 'trace', opId!]);
      expect(t.notes).toEqual([]);
      expect(t.summary).toMatchObject({
        op_id: opId,
        ok: false,
        kind: 'vm.create',
        state: 'failed',
        message: cliMessage,
      });
      const helperFailed = t.records.filter((x) => x.source === 'helper' && x.msg === 'helper rpc failed');
      expect(helperFailed.map((x) => x.fields?.method)).toEqual(['priv.create_tap']);
      expect(helperFailed[0]!.fields).toMatchObject({ code: 'operation_failed' });
      expect(typeof helperFailed[0]!.duration_ms).toBe('number');
      // The helper calls that succeeded before it (the bridge) are on the timeline too.
      expect(t.records.some((x) => x.source === 'helper' && x.msg === 'helper rpc completed')).toBe(true);
      const failed = stepRecs(t).find((x) => x.fields!.state === 'failed')!;
      expect(failed.fields!.step).toBe('network');
      expect(failed.msg).toContain('injected test fault at priv.create_tap');
      expect(t.records.find((x) => x.source === 'daemon' && x.msg === 'step failed')?.fields).toMatchObject({
        step: 'network',
      });
      expect(daemonMsgs(t)).toContain('operation failed');
      // It failed before any boot: no console window.
      expect(serialRecs(t)).toEqual([]);
      expectTimeOrdered(t);
    } finally {
      await restartSmokeHelper({});
    }
  });
});

describe('op trace of failed operations (a bangerd with BANGER_TEST_FAIL_STEP=wait_ready)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bsmoke-op-'));
  const socket = join(dir, 'd.sock');
  const stateDir = join(dir, 'state');
  let pid = 0;

  /** banger against the fault daemon. */
  const faulty = (args: string[]): Promise<CmdResult> =>
    inNetns(smokeEnv().netns, [BIN('banger'), ...args, '--socket', socket]);
  async function faultyJson<T>(args: string[]): Promise<T> {
    const r = await faulty([...args, '--json']);
    if (r.code !== 0) throw new Error(`banger ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout) as T;
  }

  beforeAll(async () => {
    const env = smokeEnv();
    const out = openSync(join(dir, 'bangerd.stderr'), 'a');
    const p = spawn(
      'ip',
      [
        'netns',
        'exec',
        env.netns,
        BIN('bangerd'),
        '--socket',
        socket,
        '--state-dir',
        stateDir,
        '--log-file',
        join(dir, 'bangerd.log'),
        '--config',
        env.configFile,
        '--helper-socket',
        'none',
      ],
      {
        stdio: ['ignore', out, out],
        detached: true,
        env: { ...process.env, BANGER_TEST_FAIL_STEP: 'wait_ready' },
      },
    );
    p.unref();
    pid = p.pid!;
    for (let i = 0; i < 300 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(socket)).toBe(true);
    // Record the default image in this daemon (the image cache makes it a cache hit).
    const b = await faulty(['image', 'build']);
    expect(b.code, b.stderr).toBe(0);
  });

  afterAll(async () => {
    for (const vm of await faultyJson<Vm[]>(['vm', 'list']).catch(() => [] as Vm[]))
      await faulty(['vm', 'delete', vm.name]);
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
    await new Promise((r) => setTimeout(r, 1000));
    if (process.env.BANGER_SMOKE_KEEP !== '1') rmSync(dir, { recursive: true, force: true });
  });

  it('a create that fails at wait_ready: the CLI error, the failed step, the daemon lines and the console of the window', async () => {
    const name = uniqueName('opfail');
    const r = await faulty(['vm', 'create', '--name', name]);
    expect(r.code).toBe(1);
    const m = /^error: (.*) \((op-[0-9a-f]+)\)$/m.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    const [, cliMessage, opId] = m!;
    expect(cliMessage).toContain('injected test fault at wait_ready');
    // The create undid everything: the VM's directory, console log included, is gone.
    expect(existsSync(join(stateDir, 'vms')) ? readdirSync(join(stateDir, 'vms')) : []).toEqual([]);

    const t = await faultyJson<OpTraceResult>(['op', 'trace', opId!]);
    expect(t.summary).toMatchObject({
      op_id: opId,
      ok: false,
      code: 'operation_failed',
      kind: 'vm.create',
      state: 'failed',
      vm: name,
      message: cliMessage,
    });
    const steps = stepRecs(t);
    const failed = steps.find((s) => s.fields!.state === 'failed')!;
    expect(failed.fields!.step).toBe('wait_ready');
    expect(failed.msg).toContain('injected test fault at wait_ready');
    expect(steps.filter((s) => s.fields!.state === 'undone').map((s) => s.fields!.step)).toEqual(
      expect.arrayContaining(['record', 'prepare_disk', 'seed', 'boot']),
    );
    // The outcome closes the timeline with the message the CLI printed.
    expect(t.records.some((x) => x.source === 'step' && x.msg === `vm.create failed: ${cliMessage}`)).toBe(
      true,
    );

    const daemon = t.records.filter((x) => x.source === 'daemon');
    expect(daemon.find((x) => x.msg === 'step failed')?.fields).toMatchObject({ step: 'wait_ready' });
    expect(daemon.find((x) => x.msg === 'operation failed')?.fields).toMatchObject({
      code: 'operation_failed',
      kind: 'vm.create',
    });
    // vm.create.begin itself answered fine: the failure belongs to the operation it began.
    expect(daemon.find((x) => x.msg === 'rpc completed')?.fields).toMatchObject({
      method: 'vm.create.begin',
    });

    // The guest booted before the fault: its console lines of the window survived the undo.
    const serial = serialRecs(t);
    expect(serial[0]!.msg).toBe(`banger: ${opId} vm.create begins`);
    expect(serial.some((x) => /Linux version/.test(x.msg))).toBe(true);
    expect(serial.length).toBeGreaterThan(3);
    expect(serial.every((x) => x.in_window === true && x.fields?.vm === name)).toBe(true);
    expect(serial.at(-1)!.rel_ms).toBeLessThanOrEqual(failed.rel_ms + failed.duration_ms! + 2000);
    expectTimeOrdered(t);

    const human = await faulty(['op', 'trace', opId!]);
    expect(human.stdout).toContain(cliMessage);
    expect(human.stdout).toMatch(/step {4}wait_ready failed: injected test fault/);
    expect(human.stdout).toContain(`${name} │ banger: ${opId} vm.create begins`);
    const listed = await faultyJson<OpSummary[]>(['op', 'list', '--failed', '--vm', name]);
    expect(listed.map((o) => o.op_id)).toEqual([opId]);
  });

  it("a start that fails synchronously: the daemon's rpc failed line and the console of its window", async () => {
    const name = uniqueName('opstart');
    const c = await faultyJson<{ operation: Operation }>(['vm', 'create', '--name', name, '--no-start']);
    expect(c.operation.state).toBe('succeeded');
    const r = await faulty(['vm', 'start', name]);
    expect(r.code).toBe(1);
    const m = /\((op-[0-9a-f]+)\)$/m.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    const opId = m![1]!;

    const t = await faultyJson<OpTraceResult>(['op', 'trace', opId]);
    expect(t.summary).toMatchObject({ method: 'vm.start', ok: false, code: 'operation_failed', vm: name });
    expect(t.summary!.kind).toBeUndefined();
    const failedLine = t.records.find((x) => x.source === 'daemon' && x.msg === 'rpc failed');
    expect(failedLine?.fields).toMatchObject({ method: 'vm.start', code: 'operation_failed' });
    expect(String(failedLine?.fields?.error)).toContain('injected test fault at wait_ready');
    expect(failedLine?.duration_ms).toBe(t.summary!.duration_ms);
    const serial = serialRecs(t);
    expect(serial[0]!.msg).toBe(`banger: ${opId} vm.start begins`);
    expect(serial.some((x) => /Linux version/.test(x.msg))).toBe(true);
    expect(serial.every((x) => x.rel_ms <= failedLine!.rel_ms + 500)).toBe(true);
    expectTimeOrdered(t);

    expect((await faulty(['vm', 'delete', name])).code).toBe(0);
  });
});
