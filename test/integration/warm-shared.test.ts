// Real QEMU under TCG: a warm template's RAM in a file shared copy-on-write with its clones. A
// tiny busybox guest ("the template") runs with memory-backend-file share=on, writes a marker
// into its tmpfs root and counts on the console; its state is saved with x-ignore-shared (device
// state only: small), and its RAM file sealed read-only. Two clones map that file share=off with
// -incoming defer, load the state (src/vm/warm.ts startFromSharedState: the code path of every
// warm clone), and go on counting from where the template stopped, at the same time, with the
// template's marker. The RAM file is byte-for-byte unchanged afterwards, and the clones share its
// pages (Pss < Rss of the mapping). One template, then two small clones (2 shared cores).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxInitramfs } from '../../src/engine/cpio.ts';
import type { VmLaunchSpec, VmmHandle } from '../../src/engine/driver.ts';
import { INCOMING_DEFER, saveState } from '../../src/engine/migration.ts';
import { QemuDriver, type QemuHandle } from '../../src/engine/qemu.ts';
import { buildQemuArgv, hostTscKhz } from '../../src/engine/qemu-argv.ts';
import { createLogger } from '../../src/log/logger.ts';
import { sealTemplateFiles, startFromSharedState } from '../../src/vm/warm.ts';
import { ensureKernel as ensureTestKernel, haveQemu } from '../helpers/test-kernel.ts';

const MiB = 1024 * 1024;

const skipReason = !haveQemu()
  ? 'qemu-system-x86_64 is not installed'
  : !existsSync('/bin/busybox')
    ? '/bin/busybox is missing (apt-get install busybox-static)'
    : hostTscKhz() === null
      ? 'no host TSC rate in /proc/cpuinfo'
      : null;
if (skipReason) console.warn(`warm-shared: skipped: ${skipReason}`);

/** The Debian cloud kernel, fetched with apt-get once into the cache the engine tests share. */
const ensureKernel = (): string => ensureTestKernel().vmlinuz;

// The guest: a random marker in a file of its tmpfs root (guest RAM), 16 MiB of data beside it
// (pages a clone maps but never writes), then a counter that reads the marker back every tick.
const INIT = `B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
$B cat /proc/sys/kernel/random/uuid > /marker
$B dd if=/dev/urandom of=/blob bs=1M count=16 2>/dev/null
echo "BANGER_MARKER $($B cat /marker)"
i=0
while true; do
  i=$((i+1))
  echo "TICK $i $($B cat /marker)"
  $B sleep 1
done
`;

const serial = (path: string): string => (existsSync(path) ? readFileSync(path, 'utf8') : '');

/** Complete console lines `TICK n marker`, in order. */
function ticks(path: string): { n: number; marker: string }[] {
  return [...serial(path).matchAll(/^TICK (\d+) ([0-9a-f-]{36})\r?$/gm)].map((m) => ({
    n: Number(m[1]),
    marker: m[2]!,
  }));
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
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

/** The smaps fields (kB → bytes) of the mapping of `file` in process `pid`, summed over its VMAs. */
function mappingOf(pid: number, file: string): Record<string, number> {
  const out: Record<string, number> = {};
  let inside = false;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inside = line.endsWith(` ${file}`);
    else if (inside) {
      const m = /^(\w+):\s+(\d+) kB$/.exec(line);
      if (m) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]) * 1024;
    }
  }
  return out;
}

/** /proc/PID/smaps_rollup, kB → bytes. */
function rollup(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').matchAll(/^(\w+):\s+(\d+) kB$/gm))
    out[m[1]!] = Number(m[2]) * 1024;
  return out;
}

describe.skipIf(skipReason !== null)(
  'warm templates share their RAM file copy-on-write (real QEMU, TCG)',
  () => {
    let root: string;
    let kernel: string;
    let initrd: string;
    const handles: VmmHandle[] = [];
    const log = createLogger({ name: 'warm-shared', quiet: true });

    beforeAll(() => {
      kernel = ensureKernel();
      root = mkdtempSync(join(tmpdir(), 'banger-warm-shared-'));
      initrd = join(root, 'initrd.cpio');
      writeFileSync(initrd, busyboxInitramfs(readFileSync('/bin/busybox'), INIT));
    }, 120_000);

    afterAll(async () => {
      for (const h of handles) {
        await h.kill().catch(() => {});
        await h.waitExit().catch(() => {});
      }
      if (root) rmSync(root, { recursive: true, force: true });
    });

    it('a template saved with x-ignore-shared (small state, RAM file unchanged) runs on in two clones at once', async () => {
      const driver = new QemuDriver();
      const tplDir = join(root, 'tpl');
      mkdirSync(tplDir, { mode: 0o700 });
      const ram = join(tplDir, 'ram');
      const state = join(tplDir, 'state');
      const tpl: VmLaunchSpec = {
        id: 'warm-tpl',
        vmDir: tplDir,
        kernel,
        initrd,
        cmdline: 'quiet',
        vcpus: 1,
        memoryMiB: 128,
        disks: [],
        net: { mode: 'user', sshHostPort: await freePort(), restrict: true, mac: '52:54:00:12:34:56' },
        serialLog: join(tplDir, 'serial.log'),
        accel: 'tcg',
        tbSizeMiB: 32,
        // Pinned as src/vm/warm.ts does: the clones' argv must be the template's.
        tscKhz: hostTscKhz()!,
        memory: { backendFile: ram, share: true },
      };

      // The template: boot, count a little, save the device state only, go.
      const th = (await driver.start(driver.prepare(tpl), { logger: log })) as QemuHandle;
      handles.push(th);
      await waitFor('the template counting to 3', () => ticks(tpl.serialLog).some((t) => t.n >= 3), 60_000);
      const saved = await saveState(th.qmp!, state, { ignoreShared: true });
      const lastTpl = ticks(tpl.serialLog).at(-1)!;
      await th.kill('SIGKILL');
      await th.waitExit();
      await sealTemplateFiles([ram, state]);
      const stateBytes = statSync(state).size;
      const ramStat = statSync(ram);
      // Only the device state: the RAM (128 MiB, of which the guest wrote well over 16) stayed in its file.
      expect(stateBytes).toBeLessThan(MiB);
      expect(ramStat.size).toBe(128 * MiB);
      expect(ramStat.blocks * 512).toBeGreaterThan(16 * MiB);
      expect(ramStat.mode & 0o777).toBe(0o444);
      expect(statSync(state).mode & 0o777).toBe(0o444);
      const ramHash = sha256(ram);

      // Two clones: per-VM paths and port, the same RAM file share=off, -incoming defer.
      const clones: { spec: VmLaunchSpec; handle: VmmHandle; loadMs: number; startMs: number }[] = [];
      for (const name of ['clone-a', 'clone-b']) {
        const dir = join(root, name);
        mkdirSync(dir, { mode: 0o700 });
        const spec: VmLaunchSpec = {
          ...tpl,
          id: name,
          vmDir: dir,
          serialLog: join(dir, 'serial.log'),
          net: { ...(tpl.net as { mode: 'user'; sshHostPort: number }), sshHostPort: await freePort() },
          memory: { backendFile: ram, share: false },
          incoming: INCOMING_DEFER,
        };
        const a = buildQemuArgv(tpl);
        const b = buildQemuArgv(spec);
        expect(b.slice(-2)).toEqual(['-incoming', 'defer']);
        const norm = (argv: string[], s: VmLaunchSpec): string[] =>
          argv.map((x) =>
            x
              .replace(`mem-path=${ram},share=off`, 'mem-path=RAM,share=on')
              .replace(`mem-path=${ram},share=on`, 'mem-path=RAM,share=on')
              .replaceAll(s.vmDir, 'DIR')
              .replaceAll(s.id, 'ID')
              .replaceAll(String((s.net as { sshHostPort: number }).sshHostPort), 'PORT'),
          );
        expect(norm(b.slice(0, -2), spec)).toEqual(norm(a, tpl));
        const t0 = Date.now();
        const r = await startFromSharedState({ driver, log }, spec, state);
        handles.push(r.handle);
        clones.push({ spec, handle: r.handle, loadMs: r.loadMs, startMs: Date.now() - t0 });
      }

      // Both go on from where the template stopped, with the template's marker, at the same time.
      for (const c of clones) {
        const first = await waitFor(`${c.spec.id} counting`, () => ticks(c.spec.serialLog)[0], 30_000);
        // The first complete line is the template's next tick (or the one after, when the template
        // was stopped halfway through writing a line).
        expect(first.n).toBeGreaterThan(lastTpl.n);
        expect(first.n).toBeLessThanOrEqual(lastTpl.n + 2);
        expect(first.marker).toBe(lastTpl.marker);
        expect(serial(c.spec.serialLog)).not.toContain('BANGER_MARKER'); // it did not boot
      }
      for (const c of clones) {
        const from = ticks(c.spec.serialLog)[0]!.n;
        await waitFor(
          `${c.spec.id} ticking on`,
          () => (ticks(c.spec.serialLog).at(-1)?.n ?? 0) >= from + 2,
          30_000,
        );
        expect(await c.handle.status()).toBe('running');
      }

      // Memory: the clones share the RAM file's pages; what a clone writes stays its own.
      const mem = clones.map((c) => ({
        id: c.spec.id,
        ram: mappingOf(c.handle.pid, ram),
        all: rollup(c.handle.pid),
      }));
      for (const m of mem) {
        expect(m.ram.Rss).toBeGreaterThan(0);
        expect(m.ram.Shared_Clean ?? 0).toBeGreaterThan(0);
        expect(m.ram.Pss).toBeLessThan(m.ram.Rss!);
        expect(m.all.Pss).toBeLessThan(m.all.Rss!);
      }
      for (const c of clones) {
        await c.handle.kill('SIGKILL');
        await c.handle.waitExit();
      }
      expect(sha256(ram)).toBe(ramHash);

      const kb = (n: number | undefined): number => Math.round((n ?? 0) / 1024);
      console.log(
        'warm-shared:',
        JSON.stringify({
          save_ms: saved.durationMs,
          state_bytes: stateBytes,
          ram_file_bytes_on_disk: ramStat.blocks * 512,
          clones: clones.map((c, i) => ({
            id: c.spec.id,
            start_to_running_ms: c.startMs,
            load_state_ms: c.loadMs,
            ram_mapping_kb: {
              rss: kb(mem[i]!.ram.Rss),
              pss: kb(mem[i]!.ram.Pss),
              shared_clean: kb(mem[i]!.ram.Shared_Clean),
              private_dirty: kb(mem[i]!.ram.Private_Dirty),
            },
            process_kb: { rss: kb(mem[i]!.all.Rss), pss: kb(mem[i]!.all.Pss) },
          })),
        }),
      );
    }, 90_000);
  },
);
