import { describe, expect, it } from 'vitest';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { ConnectError } from '../../src/rpc/transport.ts';
import {
  checkResourceName,
  checkVmName,
  fanOut,
  fanOutErrorLine,
  fanOutExitCode,
  hostFile,
  mentionsName,
  type FanOutErr,
} from '../../src/cli/vm-ref.ts';

describe('names', () => {
  it.each(['calm-otter', 'a', '0abc', 'a1b2c3d4e5f6', 'a'.repeat(64)])('VM name %s is fine', (n) =>
    expect(() => checkVmName(n)).not.toThrow(),
  );
  it.each(['Calm', '-a', 'a_b', '', 'a'.repeat(65), 'a b'])('VM name %j is a bad_request', (n) => {
    try {
      checkVmName(n);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ErrorResponse);
      expect((e as ErrorResponse).code).toBe('bad_request');
      expect((e as ErrorResponse).message).toMatch(/invalid VM name/);
    }
  });
  it('image/kernel names allow dots, underscores and capitals', () => {
    expect(() => checkResourceName('Debian_12.x', 'image')).not.toThrow();
    expect(() => checkResourceName('.hidden', 'kernel')).toThrow(/invalid kernel name/);
  });
});

describe('fanOut', () => {
  it('runs calls concurrently, once per distinct name, and keeps argument order', async () => {
    let inFlight = 0;
    let peak = 0;
    const seen: string[] = [];
    const results = await fanOut(
      ['b', 'a', 'b', 'ghost'],
      async (name) => {
        inFlight += 1;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setTimeout(r, name === 'b' ? 30 : 5));
        inFlight -= 1;
        if (name === 'ghost')
          throw new ErrorResponse('not_found', 'vm "ghost" not found', { opId: 'op-abcdef' });
        return name.toUpperCase();
      },
      (r) => seen.push(r.name),
    );
    expect(peak).toBe(3);
    expect(results.map((r) => r.name)).toEqual(['b', 'a', 'ghost']);
    expect(seen.at(-1)).toBe('b'); // reported as they finish
    expect(results[0]).toMatchObject({ ok: true, result: 'B' });
    const err = results[2] as FanOutErr;
    expect(err).toMatchObject({ ok: false, exit_code: 3, error: { code: 'not_found', op_id: 'op-abcdef' } });
    // The daemon's message names the VM: the line names it once.
    expect(fanOutErrorLine(err)).toBe('error: vm "ghost" not found (op-abcdef)');
    expect(fanOutExitCode(results)).toBe(3);
  });

  it('exit codes: 0 when all succeed, the shared code, else 1; unknown errors are operation_failed', async () => {
    const r = await fanOut(['a', 'b'], async (n) => {
      if (n === 'a') throw new ErrorResponse('not_running', 'not running');
      throw new Error('boom');
    });
    expect(r.map((x) => (x.ok ? 0 : x.exit_code))).toEqual([5, 1]);
    expect(fanOutExitCode(r)).toBe(1);
    expect(fanOutExitCode(await fanOut(['a'], async () => 1))).toBe(0);
  });

  it('the error line names the VM once: prefixed only when the message does not name it', () => {
    const line = (name: string, message: string): string =>
      fanOutErrorLine({
        name,
        ok: false,
        exit_code: 5,
        error: { code: 'not_running', message },
        duration_ms: 1,
      });
    expect(line('demo', 'vm "demo" is not running')).toBe('error: vm "demo" is not running');
    expect(line('demo', 'not running')).toBe('error: demo: not running');
    // A longer name that merely contains it is not a mention.
    expect(line('demo', 'vm "demo-2" is not running')).toBe('error: demo: vm "demo-2" is not running');
    expect(mentionsName('stop demo.', 'demo')).toBe(true);
    expect(mentionsName('a.demo', 'demo')).toBe(false);
    expect(mentionsName('demo', 'demo')).toBe(true);
    expect(mentionsName('undemo', 'demo')).toBe(false);
  });

  it('an unreachable daemon is thrown once, not reported per name', async () => {
    const e = new ConnectError('/x.sock', Object.assign(new Error('x'), { code: 'ENOENT' }));
    await expect(fanOut(['a', 'b'], async () => Promise.reject(e))).rejects.toBe(e);
  });
});

describe('hostFile', () => {
  it('makes paths absolute and refuses missing files and directories', () => {
    expect(hostFile('package.json', '--rootfs')).toBe(`${process.cwd()}/package.json`);
    expect(() => hostFile('nope.ext4', '--rootfs')).toThrow(
      /--rootfs nope\.ext4: no such file \(\/.*nope\.ext4\)/,
    );
    expect(() => hostFile('.', '--kernel')).toThrow(/not a regular file/);
  });
});
