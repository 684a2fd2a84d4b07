// The one table from domain errors to wire codes (src/rpc/error-map.ts). It is keyed by class name
// so bangerd-root need not load the store or the engine; these tests tie those names and codes to
// the real classes, so a renamed class or a new domain code cannot slip past the table.
import { readFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../generated/errors.gen.ts';
import { HelperError } from '../../src/daemon/helper-link.ts';
import { EngineError, type EngineErrorCode } from '../../src/engine/errors.ts';
import { HostnetError } from '../../src/hostnet/exec.ts';
import { AbortedError, CommandError } from '../../src/image/exec.ts';
import { ConnectError } from '../../src/rpc/client-socket.ts';
import { CLASS_CODES, DOMAIN_CODES, mapDomainError } from '../../src/rpc/error-map.ts';
import { ErrorResponse, toErrorResponse } from '../../src/rpc/errors.ts';
import { StoreError, type StoreErrorCode } from '../../src/store/errors.ts';
import { VmError, type VmErrorKind } from '../../src/vm/errors.ts';
import { OpError, type OpErrorKind } from '../../src/ops/errors.ts';
import { BootStalledError } from '../../src/vm/machine.ts';
import { ReidentifyError } from '../../src/vm/reidentify.ts';
import { TransitionError } from '../../src/vm/states.ts';

const OP = 'op-0123456789ab';

describe('the table covers every domain code', () => {
  it('StoreError and EngineError: exactly their code unions (checked by tsc)', () => {
    // A code added to a union and not to the table fails to compile here; so does a stale one.
    const store: Record<StoreErrorCode, ErrorCode> = DOMAIN_CODES.StoreError;
    const engine: Record<EngineErrorCode, ErrorCode> = DOMAIN_CODES.EngineError;
    const vm: Record<VmErrorKind, ErrorCode> = DOMAIN_CODES.VmError;
    const ops: Record<OpErrorKind, ErrorCode> = DOMAIN_CODES.OpError;
    expect(Object.keys(ops)).toHaveLength(3);
    expectTypeOf<keyof typeof DOMAIN_CODES.VmError>().toEqualTypeOf<VmErrorKind>();
    expect(Object.keys(vm)).toHaveLength(7);
    expectTypeOf<keyof typeof DOMAIN_CODES.StoreError>().toEqualTypeOf<StoreErrorCode>();
    expectTypeOf<keyof typeof DOMAIN_CODES.EngineError>().toEqualTypeOf<EngineErrorCode>();
    expect(Object.keys(store).length).toBeGreaterThan(5);
    expect(Object.keys(engine).length).toBeGreaterThan(5);
  });

  it('every class the table names is spelled as the class spells itself', () => {
    const instances: Error[] = [
      new StoreError('not_found', 'x'),
      new EngineError('timeout', 'x'),
      new VmError('conflict', 'x'),
      new OpError('not_found', 'x'),
      new BootStalledError('box', 60_000),
      new HelperError('priv.ping', new ErrorResponse('unauthorized', 'x')),
      new TransitionError('box', 'running', 'creating'),
      new HostnetError('create_tap', 'x'),
      new CommandError(['false'], 1, null, ''),
      new ReidentifyError(1, 'x'),
      new ConnectError('/nope.sock', Object.assign(new Error('x'), { code: 'ENOENT' })),
      new AbortedError('x'),
    ];
    const names = instances.map((e) => e.name).sort();
    const table = [...Object.keys(DOMAIN_CODES), ...Object.keys(CLASS_CODES)];
    for (const n of names) expect(table, n).toContain(n);
  });
});

describe('mapDomainError', () => {
  it.each<[string, Error, ErrorCode]>([
    ['store not_found', new StoreError('not_found', 'no image with id 7'), 'not_found'],
    ['vm conflict', new VmError('conflict', 'vm "box" is busy (stopping)'), 'conflict'],
    ['vm invalid', new VmError('invalid', 'disk size must be at least 512M'), 'bad_request'],
    ['vm exists', new VmError('exists', 'vm "box" already exists'), 'already_exists'],
    ['vm failed (a stalled boot)', new BootStalledError('box', 60_000), 'operation_failed'],
    ['store in_use', new StoreError('in_use', 'image i is used by box'), 'conflict'],
    ['store corrupt', new StoreError('corrupt', 'not a database'), 'operation_failed'],
    ['engine not_running', new EngineError('not_running', 'the VMM is gone'), 'not_running'],
    ['engine already_running', new EngineError('already_running', 'a VMM owns it'), 'conflict'],
    ['engine invalid_spec', new EngineError('invalid_spec', 'bad MAC'), 'bad_request'],
    ['engine start_failed', new EngineError('start_failed', 'qemu exited'), 'operation_failed'],
    ['engine no_space', new EngineError('no_space', 'ENOSPC'), 'operation_failed'],
    ['engine timeout', new EngineError('timeout', 'no QMP greeting within 10 s'), 'operation_failed'],
    ['a refused transition', new TransitionError('box', 'stopped', 'paused'), 'conflict'],
    ['host networking', new HostnetError('create_tap', 'RTNETLINK answers: busy'), 'operation_failed'],
    ['a child process', new CommandError(['mkfs.ext4', 'x'], 1, null, 'no space'), 'operation_failed'],
    ['an aborted child process', new AbortedError('mkfs.ext4 x'), 'canceled'],
    [
      'the helper refusing the daemon',
      new HelperError('priv.create_tap', new ErrorResponse('unauthorized', 'uid 1000 not served')),
      'operation_failed',
    ],
    [
      'the helper canceled',
      new HelperError('priv.create_tap', new ErrorResponse('canceled', 'call canceled')),
      'canceled',
    ],
    ['anything else', new Error('disk on fire'), 'operation_failed'],
  ])('%s', (_what, err, code) => {
    const m = mapDomainError(err);
    expect(m.code).toBe(code);
    // Messages stay the domain's own, human, words.
    expect(m.message).toBe(err.message);
  });

  it('a helper error names the helper and the verb', () => {
    const e = new HelperError('priv.create_tap', new ErrorResponse('bad_request', 'tap x is not banger’s'));
    expect(mapDomainError(e)).toEqual({
      code: 'operation_failed',
      message: 'root helper: priv.create_tap: tap x is not banger’s',
    });
  });

  it('an engine error carries its details as wire data', () => {
    const e = new EngineError('start_failed', 'qemu exited', { details: { pid: 42, stderr: 'boom' } });
    expect(mapDomainError(e)).toEqual({
      code: 'operation_failed',
      message: 'qemu exited',
      data: { pid: 42, stderr: 'boom' },
    });
  });

  it('a code the table does not know becomes operation_failed', () => {
    const e = Object.assign(new Error('new failure'), { name: 'StoreError', code: 'brand_new' });
    expect(mapDomainError(e).code).toBe('operation_failed');
  });

  it('an AbortSignal: aborted → canceled, timed out → operation_failed, both with a message', async () => {
    const ac = new AbortController();
    const aborted = sleep(10_000, undefined, { signal: ac.signal }).catch((e: unknown) => e);
    ac.abort();
    expect(mapDomainError(await aborted)).toMatchObject({ code: 'canceled', message: expect.any(String) });
    const timedOut = await sleep(10_000, undefined, { signal: AbortSignal.timeout(5) }).catch(
      (e: unknown) => e,
    );
    const m = mapDomainError(timedOut);
    expect(m.code).toBe('operation_failed');
    expect(m.message).toMatch(/timeout/i);
  });

  it('a thrown non-Error becomes operation_failed with its text', () => {
    expect(mapDomainError('plain string')).toEqual({ code: 'operation_failed', message: 'plain string' });
  });
});

describe('SQLite errors that escaped the store', () => {
  const db = new DatabaseSync(':memory:');
  db.exec('PRAGMA foreign_keys = ON');
  db.exec('CREATE TABLE kernels (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)');
  db.exec(
    'CREATE TABLE vms (id INTEGER PRIMARY KEY, guest_ip TEXT UNIQUE, vcpus INTEGER CHECK (vcpus > 0), kernel_id INTEGER REFERENCES kernels(id))',
  );
  db.exec("INSERT INTO kernels (id, name) VALUES (1, 'k'); INSERT INTO vms (guest_ip) VALUES ('10.0.0.2')");
  const thrown = (sql: string): unknown => {
    try {
      db.exec(sql);
    } catch (err) {
      return err;
    }
    throw new Error(`no error from ${sql}`);
  };

  it('a UNIQUE violation → already_exists, said in words', () => {
    expect(mapDomainError(thrown("INSERT INTO kernels (name) VALUES ('k')"))).toEqual({
      code: 'already_exists',
      message: 'a kernel with this name already exists',
    });
    expect(mapDomainError(thrown("INSERT INTO vms (guest_ip) VALUES ('10.0.0.2')")).message).toBe(
      'a vm with this guest ip already exists',
    );
  });

  it('a PRIMARY KEY violation → already_exists', () => {
    expect(mapDomainError(thrown("INSERT INTO kernels (id, name) VALUES (1, 'other')")).code).toBe(
      'already_exists',
    );
  });

  it('a FOREIGN KEY violation → conflict; a CHECK violation → bad_request', () => {
    expect(mapDomainError(thrown('INSERT INTO vms (kernel_id) VALUES (99)')).code).toBe('conflict');
    expect(mapDomainError(thrown('INSERT INTO vms (vcpus) VALUES (0)')).code).toBe('bad_request');
  });
});

describe('toErrorResponse', () => {
  it('stamps the op id on a mapped domain error and keeps the cause', () => {
    const cause = new StoreError('in_use', 'kernel k is used by image i');
    const e = toErrorResponse(cause, OP);
    expect(e).toBeInstanceOf(ErrorResponse);
    expect(e.toWire()).toEqual({ code: 'conflict', message: 'kernel k is used by image i', op_id: OP });
    expect(e.message).toBe(`kernel k is used by image i (${OP})`);
    expect(e.cause).toBe(cause);
  });

  it('leaves an ErrorResponse as it is, stamping the op id only when it has none', () => {
    const fresh = new ErrorResponse('not_found', 'vm "x" not found');
    expect(toErrorResponse(fresh, OP).toWire()).toEqual({
      code: 'not_found',
      message: 'vm "x" not found',
      op_id: OP,
    });
    const stamped = new ErrorResponse('conflict', 'busy', { opId: 'op-aaaaaa' });
    expect(toErrorResponse(stamped, OP).opId).toBe('op-aaaaaa');
  });
});

describe("docs/protocol.md's code table", () => {
  it('lists every code with the exit code and universality of schema/methods.json', () => {
    const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
    const rows = [...doc.matchAll(/^\| `(\w+)` +\| (\d+) +\| (yes|no) +\|/gm)].map((m) => [
      m[1],
      Number(m[2]),
      m[3] === 'yes',
    ]);
    const schema = Object.entries(ERROR_CODES).map(([code, e]) => [code, e.exit, e.universal]);
    expect(rows.sort()).toEqual(schema.sort());
  });
});
