// Real QEMU under TCG: a Debian cloud kernel plus a busybox initramfs built here. One VM boots
// at a time (the host has 2 cores and is shared). Skips only when qemu-system-x86_64 is missing.
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeAccel, resetAccelMemo } from '../../src/engine/accel.ts';
import { buildCpio, type CpioEntry } from '../../src/engine/cpio.ts';
import type { VmLaunchSpec } from '../../src/engine/driver.ts';
import { EngineError } from '../../src/engine/errors.ts';
import { readHandles } from '../../src/engine/handles.ts';
import { restoreStateUri, saveState, waitIncoming } from '../../src/engine/migration.ts';
import { QemuDriver, type QemuHandle } from '../../src/engine/qemu.ts';
import { ensureKernel as ensureTestKernel, haveQemu, type TestKernel } from '../helpers/test-kernel.ts';

const MODULES = ['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_console', 'button', 'evdev'];

/** What probeAccel checks before a test boot: /dev/kvm opens read-write for this user. */
function usableDevKvm(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

const ensureKernel = (): TestKernel => ensureTestKernel(MODULES);

const INIT = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
echo BANGER_TEST_MARKER
for m in ${MODULES.join(' ')}; do $B insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
if $B grep -q banger.acpi=1 /proc/cmdline; then
  for e in /dev/input/event*; do
    ( $B dd if=$e of=/dev/null bs=24 count=1 2>/dev/null; echo BANGER_POWER_BUTTON; $B poweroff -f ) &
  done
fi
# The port's number depends on how many virtio devices precede it: find it by name.
PORT=
for p in /sys/class/virtio-ports/*; do
  [ "$($B cat $p/name 2>/dev/null)" = banger.agent ] && PORT=/dev/\${p##*/}
done
echo BANGER_READY port=$PORT
while true; do
  [ -n "$PORT" ] && echo AGENT_HELLO > $PORT 2>/dev/null
  $B sleep 1
done
`;

function buildInitramfs(modules: Map<string, string>): Buffer {
  const entries: CpioEntry[] = [
    { path: 'bin', type: 'dir' },
    { path: 'dev', type: 'dir' },
    { path: 'proc', type: 'dir' },
    { path: 'sys', type: 'dir' },
    { path: 'lib', type: 'dir' },
    { path: 'lib/modules', type: 'dir' },
    { path: 'bin/busybox', type: 'file', data: readFileSync('/bin/busybox') },
    ...MODULES.map((m): CpioEntry => ({
      path: `lib/modules/${m}.ko`,
      type: 'file',
      data: readFileSync(modules.get(m)!),
    })),
    { path: 'init', type: 'file', data: INIT },
  ];
  return buildCpio(entries);
}

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

function serialHas(path: string, text: string): () => boolean {
  return () => existsSync(path) && readFileSync(path, 'utf8').includes(text);
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function readFromSocket(path: string, want: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const sock = createConnection({ path });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no "${want}" on ${path} in ${timeoutMs} ms (got ${JSON.stringify(got)})`));
    }, timeoutMs);
    sock.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes(want)) {
        clearTimeout(timer);
        sock.destroy();
        resolve(got);
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

const qemu = haveQemu();
const timings: Record<string, number> = {};

describe.skipIf(!qemu)('QEMU driver on a real QEMU (TCG)', () => {
  let root: string;
  let kernel: string;
  let initrd: string;
  const handles: QemuHandle[] = [];

  beforeAll(() => {
    const k = ensureKernel();
    kernel = k.vmlinuz;
    root = mkdtempSync(join(tmpdir(), 'banger-engine-'));
    initrd = join(root, 'initrd.cpio');
    writeFileSync(initrd, buildInitramfs(k.modules));
  }, 120_000);

  afterAll(async () => {
    for (const h of handles) await h.kill().catch(() => {});
    if (root) rmSync(root, { recursive: true, force: true });
    console.log('engine timings (ms):', timings);
  });

  async function specFor(name: string, over: Partial<VmLaunchSpec> = {}): Promise<VmLaunchSpec> {
    const vmDir = join(root, name);
    mkdirSync(vmDir, { recursive: true });
    const seed = join(vmDir, 'seed.raw');
    writeFileSync(seed, Buffer.alloc(1024 * 1024));
    return {
      id: name,
      vmDir,
      kernel,
      initrd,
      cmdline: '',
      vcpus: 1,
      memoryMiB: 256,
      disks: [{ path: seed, format: 'raw', readOnly: true }],
      net: { mode: 'user', sshHostPort: await freePort(), restrict: true },
      serialLog: join(vmDir, 'serial.log'),
      agentSocket: join(vmDir, 'agent.sock'),
      accel: 'tcg',
      ...over,
    };
  }

  it('boots, answers QMP, survives a "daemon restart" via reattach, then is killed', async () => {
    const driver = new QemuDriver();
    const spec = await specFor('vm-a');
    const plan = driver.prepare(spec);
    const t0 = Date.now();
    const h = await driver.start(plan);
    handles.push(h);
    timings.startToQmpReady = Date.now() - t0;

    await waitFor('kernel banner', serialHas(spec.serialLog, 'Linux version'), 30_000);
    timings.startToKernelBanner = Date.now() - t0;
    await waitFor('init marker', serialHas(spec.serialLog, 'BANGER_TEST_MARKER'), 45_000);
    timings.startToInitMarker = Date.now() - t0;

    expect(await h.status()).toBe('running');
    expect(await h.qmp!.queryStatus()).toMatchObject({ status: 'running', running: true });
    expect(await h.qmp!.execute('query-kvm')).toEqual({ enabled: false, present: expect.any(Boolean) });
    expect(await h.qmp!.execute('query-name')).toEqual({ name: 'vm-a' });

    // handles.json and the pidfile agree with the handle.
    const rec = await readHandles(spec.vmDir);
    expect(rec.ok && rec.record.pid).toBe(h.pid);
    expect(rec.ok && rec.record.sshHostPort).toBe((spec.net as { sshHostPort: number }).sshHostPort);
    expect(Number(readFileSync(join(spec.vmDir, 'qemu.pid'), 'utf8').trim())).toBe(h.pid);

    // The agent channel carries guest output to the host socket; the ssh forward listens.
    await waitFor('agent port', serialHas(spec.serialLog, 'BANGER_READY'), 30_000);
    expect(await readFromSocket(spec.agentSocket!, 'AGENT_HELLO', 10_000)).toContain('AGENT_HELLO');
    await new Promise<void>((resolve, reject) => {
      const s = createConnection({
        host: '127.0.0.1',
        port: (spec.net as { sshHostPort: number }).sshHostPort,
      });
      s.on('connect', () => {
        s.destroy();
        resolve();
      });
      s.on('error', reject);
    });

    // Daemon "dies": it drops its QMP connection; a fresh driver finds the VM again.
    await h.release();
    const t1 = Date.now();
    const again = await new QemuDriver().reattach(spec.vmDir);
    timings.reattach = Date.now() - t1;
    expect(again).not.toBeNull();
    handles.push(again!);
    expect(again!.pid).toBe(h.pid);
    expect(again!.qmp).toBeDefined();
    expect(await again!.status()).toBe('running');

    // Starting the same VM twice is refused.
    await expect(driver.start(plan)).rejects.toMatchObject({ code: 'already_running' });

    // busybox init here ignores the power button: graceful times out and the VM keeps running.
    const t2 = Date.now();
    expect(await again!.shutdownGraceful(1_500)).toBe('timeout');
    expect(Date.now() - t2).toBeGreaterThanOrEqual(1_400);
    expect(await again!.status()).toBe('running');

    const exit = again!.waitExit();
    await again!.kill();
    await exit;
    expect(await again!.status()).toBe('gone');
    // Gone, or a zombie this test process (its parent) has not reaped yet: not running either way.
    const stat = existsSync(`/proc/${h.pid}`) ? readFileSync(`/proc/${h.pid}/stat`, 'utf8') : '';
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    expect(stat === '' || state === 'Z' || !stat.includes('qemu')).toBe(true);
    expect(await new QemuDriver().reattach(spec.vmDir)).toBeNull();
    // Killing again is a no-op.
    await again!.kill();
  }, 90_000);

  it('graceful shutdown: ACPI power button -> guest powers off -> QEMU exits cleanly', async () => {
    const driver = new QemuDriver();
    const spec = await specFor('vm-b', { cmdline: 'banger.acpi=1 quiet', net: { mode: 'none' }, disks: [] });
    const h = await driver.start(driver.prepare(spec));
    handles.push(h);
    await waitFor('ready marker', serialHas(spec.serialLog, 'BANGER_READY'), 45_000);
    const shutdownEvent = h.qmp!.waitForEvent('SHUTDOWN', 15_000).catch(() => null);
    const t0 = Date.now();
    expect(await h.shutdownGraceful(15_000)).toBe('clean');
    timings.gracefulShutdown = Date.now() - t0;
    expect(readFileSync(spec.serialLog, 'utf8')).toContain('BANGER_POWER_BUTTON');
    expect((await shutdownEvent)?.data).toMatchObject({ guest: true });
    // Our child: the exit code is known.
    expect(await h.waitExit()).toEqual({ code: 0, signal: null });
    expect(await h.status()).toBe('gone');
  }, 90_000);

  it('warm restore: save state, kill, restart the same plan with -incoming, cont', async () => {
    const driver = new QemuDriver();
    const spec = await specFor('vm-r');
    const h = await driver.start(driver.prepare(spec));
    handles.push(h);
    await waitFor('ready marker', serialHas(spec.serialLog, 'BANGER_READY'), 45_000);
    const state = join(spec.vmDir, "vm state's file");
    const saved = await saveState(h.qmp!, state);
    timings.saveState = saved.durationMs;
    expect(await h.status()).toBe('paused');
    expect(statSync(state).size).toBeGreaterThan(1024 * 1024);
    await h.kill();

    // Same spec (a different ssh port is allowed: the netdev backend is not part of the state).
    const restoredSpec = {
      ...spec,
      net: { mode: 'user' as const, sshHostPort: await freePort(), restrict: true },
    };
    const t0 = Date.now();
    const r = await driver.start(driver.prepare({ ...restoredSpec, incoming: restoreStateUri(state) }));
    handles.push(r);
    await waitIncoming(r.qmp!);
    expect(await r.status()).toBe('paused');
    await r.qmp!.execute('cont');
    timings.restoreToRunning = Date.now() - t0;
    expect(await r.status()).toBe('running');
    // The guest carries on where it was: its agent loop still writes to the port.
    expect(await readFromSocket(spec.agentSocket!, 'AGENT_HELLO', 10_000)).toContain('AGENT_HELLO');
    await r.kill();
  }, 90_000);

  it('early failure (bad kernel path) rejects with QEMU stderr in the error', async () => {
    const driver = new QemuDriver();
    const spec = await specFor('vm-c', { kernel: '/nonexistent/vmlinuz' });
    const t0 = Date.now();
    let err: unknown;
    try {
      await driver.start(driver.prepare(spec));
    } catch (e) {
      err = e;
    }
    timings.earlyFailure = Date.now() - t0;
    expect(err).toBeInstanceOf(EngineError);
    const e = err as EngineError;
    expect(e.code).toBe('start_failed');
    expect(e.message).toMatch(/could not load kernel|nonexistent/i);
    expect(String(e.details.stderr)).toContain('/nonexistent/vmlinuz');
    expect(e.details.exitCode).toBe(1);
    expect(timings.earlyFailure).toBeLessThan(5_000);
    expect(await driver.reattach(spec.vmDir)).toBeNull();
  }, 30_000);

  it('a missing binary is a clear start failure', async () => {
    const driver = new QemuDriver({ binary: '/nonexistent/qemu-system-x86_64' });
    const spec = await specFor('vm-d');
    await expect(driver.start(driver.prepare(spec))).rejects.toMatchObject({
      code: 'start_failed',
      message: expect.stringMatching(/ENOENT/),
    });
  });

  it("accel probe on this host's /dev/kvm: an answer with a reason, within the time limit", async () => {
    // Hosts of this kind differ: no /dev/kvm at all, or a paravirtual (PVM) one on which stock
    // guest kernels crash. Both must end on TCG; only real KVM (vmx/svm) may answer kvm.
    resetAccelMemo();
    const cacheFile = join(root, 'accel-cache-host.json');
    const t0 = Date.now();
    const r = await probeAccel({ config: 'auto', kernel, cacheFile });
    timings.accelProbe = Date.now() - t0;
    expect(r.reason.length).toBeGreaterThan(10);
    expect(r).toMatchObject({ verified: true, source: 'probe' });
    expect(timings.accelProbe).toBeLessThan(20_000);
    if (!usableDevKvm()) {
      // Nothing to test-boot, so nothing is cached: the next start asks again (cheaply).
      expect(r.accel).toBe('tcg');
      expect(r.reason).toMatch(/^\/dev\/kvm (does not exist|is not read\/writable)/);
      expect(existsSync(cacheFile)).toBe(false);
    } else {
      if (!/\b(vmx|svm)\b/.test(readFileSync('/proc/cpuinfo', 'utf8'))) {
        // PVM-backed /dev/kvm: the test boot must fail and fall back to TCG.
        expect(r.accel).toBe('tcg');
      }
      // A test boot happened, so its verdict is cached for the next daemon start.
      resetAccelMemo();
      expect(await probeAccel({ config: 'auto', kernel, cacheFile })).toMatchObject({
        accel: r.accel,
        source: 'cache-file',
      });
    }
    resetAccelMemo();
  }, 60_000);

  it('accel probe success path and its cache file, via a test boot under TCG (any host)', async () => {
    // A stand-in /dev/kvm (a read/writable file) and TCG arguments for the test boot exercise the
    // marker detection and the cache the same way whether or not this host has /dev/kvm.
    resetAccelMemo();
    const devKvm = join(root, 'fake-kvm');
    writeFileSync(devKvm, '');
    const cacheFile = join(root, 'accel-cache.json');
    // TCG boots the kernel far slower than KVM, more so on a loaded 2-core host: the 10 s limit
    // meant for a KVM test boot would time out here now and then.
    const opts = {
      config: 'auto' as const,
      kernel,
      cacheFile,
      devKvm,
      testBootAccelArgs: ['-accel', 'tcg'],
      timeoutMs: 60_000,
    };
    const t1 = Date.now();
    const ok = await probeAccel(opts);
    timings.accelProbeSuccessPathTcg = Date.now() - t1;
    expect(ok).toMatchObject({ accel: 'kvm', verified: true, source: 'probe' });
    expect(ok.reason).toMatch(/reached userspace/);
    // The answer is cached in the file for the next daemon start.
    expect(statSync(cacheFile).size).toBeGreaterThan(0);
    resetAccelMemo();
    const cached = await probeAccel(opts);
    expect(cached).toMatchObject({ accel: 'kvm', verified: true, source: 'cache-file' });
    expect(cached.reason).toBe(ok.reason);
    // A different kernel is a different key: no stale answer for it.
    const other = join(root, 'other-vmlinuz');
    writeFileSync(other, 'not a kernel');
    resetAccelMemo();
    const miss = await probeAccel({ ...opts, kernel: other, timeoutMs: 3_000 });
    expect(miss.source).toBe('probe');
    expect(miss.accel).toBe('tcg');
    resetAccelMemo();
  }, 120_000);
});

if (!qemu) {
  describe('QEMU driver on a real QEMU', () => {
    it.skip('skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)', () => {});
  });
}
