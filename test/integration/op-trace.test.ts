// banger op against an in-process daemon and root helper, both logging to files: one call's
// record, and its timeline with the daemon's and the helper's lines under one id. The CLI part
// runs bin/banger (needs `npm run build`).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server } from 'node:net';
import { BangerClient } from '../../generated/client.gen.ts';
import { resultValidators } from '../../generated/validators.gen.ts';
import { createLogger } from '../../src/log/logger.ts';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { startDaemon, type RunningDaemon } from '../../src/daemon/start.ts';
import { startHelper } from '../../src/helper/start.ts';
import type { ErrorResponse } from '../../src/rpc/errors.ts';
import { SocketTransport } from '../../src/rpc/transport.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BANGER = join(ROOT, 'bin', 'banger');
const built = existsSync(join(ROOT, 'dist/src/cli/commands/op/trace.js'));

function check(method: string, result: unknown): void {
  const v = resultValidators[method as keyof typeof resultValidators];
  expect(v(result), JSON.stringify(v.errors)).toBe(true);
}

function banger(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run(BANGER, args);
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, {
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('op.list / op.show / op.trace with the daemon and the helper', { timeout: 60_000 }, () => {
  const tmp = shortTempDir('bgop');
  const helperSocket = join(tmp.dir, 'root', 'helper.sock');
  const daemonSocket = join(tmp.dir, 'd.sock');
  const daemonLog = join(tmp.dir, 'state', 'bangerd.log');
  const helperLog = join(tmp.dir, 'root', 'bangerd-root.log');
  let helper: { server: Server };
  let daemon: RunningDaemon;
  let client: BangerClient;

  beforeAll(async () => {
    execFileSync(process.execPath, [
      fileURLToPath(new URL('../../scripts/build-addon.mjs', import.meta.url)),
    ]);
    chmodSync(tmp.dir, 0o755);
    helper = await startHelper({
      socket: helperSocket,
      ownerUid: process.getuid!(),
      log: createLogger({ name: 'bangerd-root', file: helperLog, quiet: true }),
      // The helper names its log file in priv.ping; the daemon is not told (discovery).
      logFile: helperLog,
    });
    daemon = await startDaemon({
      socket: daemonSocket,
      stateDir: join(tmp.dir, 'state'),
      config: DEFAULT_CONFIG,
      helperSocket,
      logFile: daemonLog,
      logStream: new MemoryLog(),
    });
    client = new BangerClient(new SocketTransport(daemonSocket));
  });
  afterAll(async () => {
    await daemon.stop('test');
    helper.server.close();
    tmp.cleanup();
  });

  const OP = 'op-0123456789ab';

  it("a daemon.status call: recorded, and its trace holds the daemon's and the helper's lines under one id", async () => {
    const status = await client.daemon.status(undefined, { opId: OP });
    expect(status.helper.reachable).toBe(true);

    const list = await client.op.list({ method: 'daemon.status' });
    check('op.list', list);
    expect(list.operations[0]).toMatchObject({ op_id: OP, method: 'daemon.status', ok: true });
    expect(list.operations[0]!.duration_ms).toBeGreaterThanOrEqual(0);

    const show = await client.op.show({ op_id: OP });
    check('op.show', show);
    expect(show.summary).toMatchObject({ op_id: OP, method: 'daemon.status', ok: true });
    expect(show.operation).toBeUndefined();

    const trace = await client.op.trace({ op_id: OP });
    check('op.trace', trace);
    expect(trace.notes).toEqual([]);
    const daemonDone = trace.records.find((r) => r.source === 'daemon' && r.msg === 'rpc completed');
    const helperDone = trace.records.find((r) => r.source === 'helper' && r.msg === 'helper rpc completed');
    expect(daemonDone?.fields).toMatchObject({ method: 'daemon.status' });
    expect(helperDone?.fields).toMatchObject({ method: 'priv.ping' });
    expect(typeof helperDone?.duration_ms).toBe('number');
    // The helper's call lies inside the daemon's (its summary line may trail the answer by a
    // moment); the timeline is ordered by time throughout.
    expect(helperDone!.rel_ms).toBeGreaterThanOrEqual(0);
    expect(helperDone!.rel_ms).toBeLessThanOrEqual(daemonDone!.rel_ms + 100);
    const times = trace.records.map((r) => Date.parse(r.time));
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(
      trace.records.every((r) => r.rel_ms === Date.parse(r.time) - Date.parse(trace.summary!.started_at)),
    ).toBe(true);
    // Only this id's lines: none of the op.list/op.show calls made meanwhile.
    expect(trace.records.some((r) => /^op\./.test(String(r.fields?.method)))).toBe(false);
    expect(trace.records.filter((r) => /rpc completed$/.test(r.msg))).toHaveLength(2);
  });

  it('a failed call is listed with --failed, with its code and the VM it named', async () => {
    const err = await client.vm
      .show({ name: 'no-such-vm' }, { opId: 'op-badbadbad0' })
      .catch((e: unknown) => e);
    expect((err as ErrorResponse).code).toBe('not_found');
    const { operations } = await client.op.list({ failed_only: true, vm: 'no-such-vm' });
    expect(operations).toEqual([
      expect.objectContaining({
        op_id: 'op-badbadbad0',
        method: 'vm.show',
        ok: false,
        code: 'not_found',
        vm: 'no-such-vm',
      }),
    ]);
    const trace = await client.op.trace({ op_id: 'op-badbadbad0' });
    expect(trace.records.map((r) => [r.source, r.msg])).toContainEqual(['daemon', 'rpc failed']);
    // Polls are not recorded; the op.* calls themselves neither.
    const all = await client.op.list({ limit: 1000 });
    expect(all.operations.some((o) => o.method.startsWith('op.'))).toBe(false);
  });

  it('an unknown id is not_found, for show and trace', async () => {
    const e1 = (await client.op.show({ op_id: 'op-ffffffffffff' }).catch((e: unknown) => e)) as ErrorResponse;
    expect(e1.code).toBe('not_found');
    const e2 = (await client.op
      .trace({ op_id: 'op-ffffffffffff' })
      .catch((e: unknown) => e)) as ErrorResponse;
    expect(e2.code).toBe('not_found');
    expect(e2.bareMessage).toMatch(/no trace of op-ffffffffffff/);
  });

  it.skipIf(!built)('the CLI: op list table, op trace timeline, --json, the TTY hint', async () => {
    const s = ['--socket', daemonSocket];
    const list = await banger(['op', 'list', ...s]);
    expect(list.code).toBe(0);
    expect(list.stdout.split('\n')[0]).toMatch(/^OP\s+METHOD\s+VM\s+STARTED\s+TOOK\s+RESULT$/);
    expect(list.stdout).toMatch(new RegExp(`${OP}\\s+daemon\\.status\\s+just now\\s+\\d+ ms\\s+ok`));

    const tr = await banger(['op', 'trace', OP, ...s]);
    expect(tr.code).toBe(0);
    expect(tr.stdout.split('\n')[0]).toMatch(new RegExp(`^${OP} {2}daemon\\.status {2}ok in`));
    expect(tr.stdout).toMatch(
      /\+\d+\.\d{3}s {2}helper {2}helper rpc completed \(\d+ ms\) {2}method=priv\.ping/,
    );
    expect(tr.stdout).toMatch(/\+\d+\.\d{3}s {2}daemon {2}rpc completed \(\d+ ms\) {2}method=daemon\.status/);

    const js = await banger(['op', 'trace', OP.slice(3), '--json', ...s]);
    const parsed = JSON.parse(js.stdout) as { op_id: string; records: { source: string }[] };
    expect(parsed.op_id).toBe(OP);
    expect(new Set(parsed.records.map((r) => r.source))).toEqual(new Set(['daemon', 'helper']));

    const unknown = await banger(['op', 'trace', 'op-ffffffffffff', ...s]);
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/^error: no trace of op-ffffffffffff: .* \(op-[0-9a-f]+\)\n$/);
    expect(unknown.stderr).not.toContain('run:'); // not a terminal

    // On a terminal (script(1) gives the command one), the error says how to trace it. Spawned
    // asynchronously: the daemon answering it lives in this process.
    if (spawnSync('sh', ['-c', 'command -v script']).status === 0) {
      const tty = await run('script', [
        '-qec',
        `${BANGER} vm show no-such-vm --socket ${daemonSocket}`,
        '/dev/null',
      ]);
      const m =
        /error: vm "no-such-vm" not found \((op-[0-9a-f]+)\)\r?\nrun: banger op trace (op-[0-9a-f]+)/.exec(
          tty.stdout,
        );
      expect(m, tty.stdout).not.toBeNull();
      expect(m![2]).toBe(m![1]);
    }
  });
});
