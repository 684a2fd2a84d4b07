// Real QEMU under TCG: the events a VM handle delivers. A guest whose disk lives on a tiny tmpfs
// writes until the host side is full: QEMU pauses it (io-error) and says so (BLOCK_IO_ERROR
// nospace, STOP); once space is freed, resume() lets the write finish. Saving that VM's state to
// a full tmpfs is reported as ENOSPC. A killed VMM yields an `exit` with why, for a child and
// for a reattached handle. One small VM at a time (the host has 2 cores and is shared).
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxInitramfs, type CpioEntry } from '../../src/engine/cpio.ts';
import type { VmLaunchSpec, VmmEvent } from '../../src/engine/driver.ts';
import { EngineError } from '../../src/engine/errors.ts';
import { saveState } from '../../src/engine/migration.ts';
import { QemuDriver, type QemuHandle } from '../../src/engine/qemu.ts';
import { ensureKernel as ensureTestKernel, haveQemu, type TestKernel } from '../helpers/test-kernel.ts';

const MODULES = ['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_blk'];
const MiB = 1024 * 1024;

const isRoot = process.getuid?.() === 0;
const qemu = haveQemu();
const busybox = existsSync('/bin/busybox');
const skipReason = !qemu
  ? 'qemu-system-x86_64 is not installed'
  : !busybox
    ? '/bin/busybox is missing (apt-get install busybox-static)'
    : null;
if (skipReason) console.warn(`engine-events: skipped: ${skipReason}`);
if (!skipReason && !isRoot)
  console.warn('engine-events: the disk-full test is skipped: mounting a tmpfs needs root');

const ensureKernel = (): TestKernel => ensureTestKernel(MODULES);

/** The guest: load the block driver, write WRITE_MIB to /dev/vda (fsync'd), say how it went. */
const WRITE_MIB = 12;
const INIT = `B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in ${MODULES.join(' ')}; do $B insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 30 ]; do $B sleep 1; i=$((i+1)); done
if [ -b /dev/vda ]; then
  echo BANGER_WRITING
  $B dd if=/dev/zero of=/dev/vda bs=1M count=${WRITE_MIB} conv=fsync 2>/dev/null
  echo BANGER_WRITE_DONE rc=$?
else
  echo BANGER_NO_DISK
fi
while true; do $B sleep 10; done
`;

async function waitFor<T>(
  what: string,
  fn: () => T | null | undefined | false,
  timeoutMs: number,
): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const serial = (path: string): string => (existsSync(path) ? readFileSync(path, 'utf8') : '');

describe.skipIf(skipReason !== null)('VMM events on a real QEMU (TCG)', () => {
  let root: string;
  let kernel: string;
  let initrd: string;
  const mounts: string[] = [];
  const handles: QemuHandle[] = [];

  beforeAll(() => {
    const k = ensureKernel();
    kernel = k.vmlinuz;
    root = mkdtempSync(join(tmpdir(), 'banger-events-'));
    initrd = join(root, 'initrd.cpio');
    const extra: CpioEntry[] = [
      { path: 'lib', type: 'dir' },
      { path: 'lib/modules', type: 'dir' },
      ...MODULES.map((m): CpioEntry => ({
        path: `lib/modules/${m}.ko`,
        type: 'file',
        data: readFileSync(k.modules.get(m)!),
      })),
    ];
    writeFileSync(initrd, busyboxInitramfs(readFileSync('/bin/busybox'), INIT, extra));
  }, 120_000);

  afterAll(async () => {
    for (const h of handles) await h.kill().catch(() => {});
    for (const m of mounts.reverse()) {
      try {
        execFileSync('umount', [m], { stdio: 'ignore' });
      } catch {
        execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      }
    }
    if (root) rmSync(root, { recursive: true, force: true });
  });

  function tmpfs(name: string, size: string): string {
    const dir = join(root, name);
    mkdirSync(dir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, `banger-test-${name}`, dir]);
    mounts.push(dir);
    return dir;
  }

  function specFor(name: string, over: Partial<VmLaunchSpec> = {}): VmLaunchSpec {
    const vmDir = join(root, name);
    mkdirSync(vmDir, { recursive: true });
    return {
      id: name,
      vmDir,
      kernel,
      initrd,
      cmdline: '',
      vcpus: 1,
      memoryMiB: 128,
      disks: [],
      net: { mode: 'none' },
      serialLog: join(vmDir, 'serial.log'),
      accel: 'tcg',
      ...over,
    };
  }

  it.skipIf(!isRoot)(
    'a write to a full host disk pauses the guest (block_io_error nospace, stop, io-error); freeing space and resume() lets it finish; saving its state on a full disk says ENOSPC',
    async () => {
      // 16 MiB of host space: an 8 MiB filler leaves 8, the guest writes 12.
      const fs = tmpfs('disk', '16m');
      const disk = join(fs, 'disk.raw');
      writeFileSync(disk, '');
      truncateSync(disk, 32 * MiB); // sparse: only what the guest writes takes space
      const filler = join(fs, 'filler');
      writeFileSync(filler, Buffer.alloc(8 * MiB, 0x55));

      const driver = new QemuDriver();
      const spec = specFor('full', { disks: [{ path: disk, format: 'raw' }] });
      const t0 = Date.now();
      const h = await driver.start(driver.prepare(spec));
      handles.push(h);
      const events: VmmEvent[] = [];
      h.onEvent((e) => events.push(e));

      await waitFor(
        'the guest to start writing',
        () => serial(spec.serialLog).includes('BANGER_WRITING'),
        45_000,
      );
      const ioError = await waitFor(
        'block_io_error',
        () => events.find((e) => e.kind === 'block_io_error'),
        30_000,
      );
      expect(ioError).toMatchObject({
        kind: 'block_io_error',
        device: 'disk0',
        operation: 'write',
        action: 'stop',
        nospace: true,
      });
      await waitFor('stop', () => events.some((e) => e.kind === 'stop'), 10_000);
      expect(await h.statusDetail()).toEqual({ status: 'paused', reason: 'io-error' });
      expect(serial(spec.serialLog)).not.toContain('BANGER_WRITE_DONE');

      // Space back on the host; the guest is still waiting for its write.
      rmSync(filler);
      const before = events.length;
      await h.resume();
      await waitFor(
        'the write to finish',
        () => /BANGER_WRITE_DONE rc=\d+/.exec(serial(spec.serialLog)),
        30_000,
      );
      expect(serial(spec.serialLog)).toContain('BANGER_WRITE_DONE rc=0');
      expect(events.slice(before).map((e) => e.kind)).toContain('resume');
      expect(await h.statusDetail()).toEqual({ status: 'running' });

      // Saving the state to a 1 MiB filesystem: ENOSPC by name, no partial file left.
      const small = tmpfs('small', '1m');
      const state = join(small, 'state');
      const err = await saveState(h.qmp!, state, { timeoutMs: 30_000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EngineError);
      expect((err as EngineError).code).toBe('no_space');
      expect((err as EngineError).message).toMatch(
        new RegExp(`^no space left on device while saving the VM state to ${state} \\(\\d+ MiB free\\)$`),
      );
      expect(readdirSync(small)).toEqual([]);

      await h.kill();
      console.log(`disk-full scenario: ${Date.now() - t0} ms`);
    },
    90_000,
  );

  it('a SIGKILLed VMM: the child handle reports the signal; a reattached one says unknown, or what the log says', async () => {
    const driver = new QemuDriver();
    const exitOf = (h: QemuHandle): Promise<VmmEvent> =>
      new Promise((resolve) => h.onEvent((e) => e.kind === 'exit' && resolve(e)));

    // Our child: the wait status names the signal.
    const a = await driver.start(driver.prepare(specFor('kill-child')));
    handles.push(a);
    const aExit = exitOf(a);
    process.kill(a.pid, 'SIGKILL');
    expect(await aExit).toMatchObject({
      kind: 'exit',
      info: { code: null, signal: 'SIGKILL', reason: 'killed by signal SIGKILL' },
    });
    expect(await a.statusDetail()).toEqual({ status: 'gone', reason: 'killed by signal SIGKILL' });

    // After a "daemon restart": no wait status, and SIGKILL leaves no trace in QEMU's log.
    const bSpec = specFor('kill-reattached');
    const b0 = await driver.start(driver.prepare(bSpec));
    handles.push(b0);
    await b0.release();
    const b = (await new QemuDriver().reattach(bSpec.vmDir))!;
    expect(b.pid).toBe(b0.pid);
    handles.push(b);
    const bExit = exitOf(b);
    process.kill(b.pid, 'SIGKILL');
    expect(await bExit).toMatchObject({
      kind: 'exit',
      info: { code: null, signal: null, reason: 'unknown' },
    });

    // SIGTERM: QEMU logs who sent it, and the reattached handle reads it back.
    const cSpec = specFor('term-reattached');
    const c0 = await driver.start(driver.prepare(cSpec));
    handles.push(c0);
    await c0.release();
    const c = (await new QemuDriver().reattach(cSpec.vmDir))!;
    handles.push(c);
    const cExit = exitOf(c);
    process.kill(c.pid, 'SIGTERM');
    const ev = await cExit;
    expect(ev).toMatchObject({ kind: 'exit', info: { signal: 'SIGTERM' } });
    expect(ev.kind === 'exit' && ev.info.reason).toMatch(
      new RegExp(`^terminated by signal 15 \\(SIGTERM\\) from pid ${process.pid}`),
    );
  }, 60_000);
});
