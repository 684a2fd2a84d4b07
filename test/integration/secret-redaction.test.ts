// secret.set / list / rm against an in-process daemon logging at trace level to a file: the value
// reaches the store (0600) and nothing else: not the log, not any response, not op show/trace,
// not the daemon's database; a refused value is not quoted in the error either.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BangerClient } from '../../generated/client.gen.ts';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { redactParams } from '../../src/daemon/rpc-log.ts';
import { startDaemon, type RunningDaemon } from '../../src/daemon/start.ts';
import type { ErrorResponse } from '../../src/rpc/errors.ts';
import { SocketTransport } from '../../src/rpc/transport.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const VALUE = 'sk-test-9f8e7d6c5b4a39281706f5e4d3c2b1a0';
const OP_SET = 'op-5ec2e75e7000';
const OP_BAD = 'op-5ec2e75e7001';

describe('secrets never leave the store', { timeout: 60_000 }, () => {
  const tmp = shortTempDir('bgsr');
  const stateDir = join(tmp.dir, 'state');
  const logFile = join(stateDir, 'bangerd.log');
  const mem = new MemoryLog();
  let daemon: RunningDaemon;
  let client: BangerClient;
  const responses: unknown[] = [];

  beforeAll(async () => {
    daemon = await startDaemon({
      socket: join(tmp.dir, 'd.sock'),
      stateDir,
      config: { ...DEFAULT_CONFIG, log_level: 'trace', dns_port: 0 },
      helperSocket: undefined,
      logFile,
      logStream: mem,
    });
    client = new BangerClient(new SocketTransport(join(tmp.dir, 'd.sock')));
  });
  afterAll(async () => {
    await daemon.stop('test');
    tmp.cleanup();
  });

  it('set stores the value 0600; list/rm answer names only', async () => {
    responses.push(await client.secret.set({ name: 'API_KEY', value: VALUE }, { opId: OP_SET }));
    expect(responses[0]).toEqual({ name: 'API_KEY', created: true });
    const file = join(stateDir, 'secrets', 'API_KEY');
    expect(readFileSync(file, 'utf8')).toBe(VALUE);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const list = await client.secret.list();
    responses.push(list);
    expect(list.secrets.map((s) => s.name)).toEqual(['API_KEY']);
    const bad = await client.secret
      .set({ name: 'OTHER', value: `${VALUE}\nX-Injected: 1` }, { opId: OP_BAD })
      .catch((e: unknown) => e as ErrorResponse);
    expect((bad as ErrorResponse).code).toBe('bad_request');
    responses.push((bad as ErrorResponse).message);
    responses.push(await client.op.show({ op_id: OP_SET }));
    responses.push(await client.op.trace({ op_id: OP_SET }));
    responses.push(await client.op.trace({ op_id: OP_BAD }));
    responses.push(await client.op.list({}));
  });

  it('the value is in no response, no log line and no other state file', async () => {
    const trace = responses[4] as { records: { msg: string }[] };
    expect(trace.records.some((r) => r.msg === 'rpc completed')).toBe(true);
    for (const r of responses) expect(JSON.stringify(r)).not.toContain(VALUE);
    expect(mem.lines.length).toBeGreaterThan(0);
    expect(mem.lines.join('\n')).not.toContain(VALUE);
    expect(readFileSync(logFile, 'utf8')).not.toContain(VALUE);
    // The database (and its WAL) hold op records: grep their bytes.
    for (const f of readdirSync(stateDir).filter((n) => n.startsWith('state.db')))
      expect(readFileSync(join(stateDir, f)).includes(VALUE)).toBe(false);
  });

  it('redactParams hides secret.set value and leaves other methods alone', () => {
    expect(redactParams('secret.set', { name: 'A', value: VALUE })).toEqual({
      name: 'A',
      value: '[redacted]',
    });
    expect(redactParams('vm.show', { name: 'x', value: 1 })).toEqual({ name: 'x', value: 1 });
  });

  it('rm removes it; a second rm is not_found', async () => {
    expect(await client.secret.rm({ name: 'API_KEY' })).toEqual({ name: 'API_KEY', deleted: true });
    const err = await client.secret.rm({ name: 'API_KEY' }).catch((e: unknown) => e as ErrorResponse);
    expect((err as ErrorResponse).code).toBe('not_found');
  });
});
