// Pause to disk and resume from disk (src/vm/lifecycle.ts, src/vm/pause.ts) against the recording
// fake VMM: the transitions (running → pausing → paused with saved_state, the VMM gone; paused →
// resuming → running with the save consumed before the guest continues), a failed save leaving
// the VM running, a failed resume keeping the save, stop/delete/start of a VM paused to disk, and
// start-up reconciliation of a daemon that died at each step of a pause or a resume.
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { guestRamDir } from '../../src/vm/guest-ram.ts';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeVmmDriver, FakeVmmHost, saveErrPath } from '../../src/engine/index.ts';
import { createLogger } from '../../src/log/logger.ts';
import { EgressEvents } from '../../src/egress/events.ts';
import { parseEgress } from '../../src/egress/rules.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { newId, openStore, type Store, type VmRow } from '../../src/store/index.ts';
import { VmLifecycle, type LifecycleDeps } from '../../src/vm/lifecycle.ts';
import { macFor, vmFiles } from '../../src/vm/layout.ts';
import { launchSpec } from '../../src/vm/machine.ts';
import { rootlessNetwork } from '../../src/vm/network.ts';
import {
  commitSaved,
  readResumedSpec,
  readSaved,
  savedPaths,
  type SavedManifest,
} from '../../src/vm/pause.ts';
import { VmRuntime } from '../../src/vm/runtime.ts';
import { sshPaths } from '../../src/vm/ssh.ts';
import { canTransition, type VmState } from '../../src/vm/states.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

describe('pause to disk', () => {
  const tmp = shortTempDir('bps');
  afterAll(() => tmp.cleanup());
  let store: Store;
  let host: FakeVmmHost;
  let driver: FakeVmmDriver;
  let runtime: VmRuntime;
  let lc: VmLifecycle;
  let stateDir: string;
  let imageId: string;
  /** VMs the fake "resumedReady" saw (clock + SSH after a resume). */
  let readied: string[];
  let readyFails = false;
  /** VMs whose clock was corrected (reconcile continues a resumed guest without an SSH wait). */
  let clocked: string[];
  const logs = new MemoryLog();

  /** Deps every lifecycle of the test gets, restarted daemons' too (ramFileLifecycle sets them). */
  let extraDeps: Partial<LifecycleDeps> = {};
  function makeLifecycle(d = driver, extra: Partial<LifecycleDeps> = extraDeps): VmLifecycle {
    const log = createLogger({ name: 'bangerd', stream: logs });
    runtime = new VmRuntime(d, log);
    const deps: LifecycleDeps = {
      stateDir,
      runtime,
      log,
      ssh: sshPaths(stateDir),
      accel: async () => 'tcg',
      readyTimeoutMs: 1000,
      store,
      network: rootlessNetwork({ config: DEFAULT_CONFIG, store, log }),
      ops: new OperationRegistry(log),
      installPubKey: async () => 'ssh-ed25519 AAAA test',
      resolveImage: async () => {
        const image = store.images.getById(imageId)!;
        return { image, kernel: store.kernels.getById(image.kernelId)! };
      },
      uid: process.getuid!(),
      correctClock: async (vm) => {
        clocked.push(vm.name);
        return 0;
      },
      resumedReady: async (vm) => {
        readied.push(vm.name);
        if (readyFails) throw new Error('ssh did not answer');
      },
      ...extra,
    };
    const l = new VmLifecycle(deps);
    runtime.listen(
      (id, expected, info) => l.onVmmExit(id, expected, info),
      (id, ev) => l.onVmmEvent(id, ev),
    );
    return l;
  }

  beforeEach(() => {
    stateDir = join(tmp.dir, `s-${newId()}`);
    mkdirSync(stateDir, { recursive: true });
    store = openStore(join(stateDir, 'state.db'));
    const k = store.kernels.insert({
      name: 'k',
      version: '6.1',
      kernelPath: '/nope/vmlinuz',
      source: 'imported',
    });
    imageId = store.images.insert({
      name: 'img',
      kernelId: k.id,
      rootfsPath: '/nope/rootfs.ext4',
      sizeBytes: 1,
      source: 'imported',
    }).id;
    host = new FakeVmmHost();
    driver = new FakeVmmDriver({ host });
    readied = [];
    clocked = [];
    readyFails = false;
    extraDeps = {};
    lc = makeLifecycle();
  });
  afterEach(() => {
    lc.close();
    store.close();
  });

  function insert(name: string, state: VmState = 'running'): VmRow {
    const id = newId();
    store.vms.insert({
      id,
      name,
      imageId,
      vcpus: 1,
      memoryMib: 256,
      diskSizeBytes: 1 << 30,
      networkMode: 'user',
      mac: macFor(id),
    });
    mkdirSync(vmFiles(stateDir, id).dir, { recursive: true });
    writeFileSync(vmFiles(stateDir, id).overlay, 'disk');
    return store.vms.writeState(id, { state, reason: null });
  }

  /** A VM booted cold and running, as `vm start` leaves it. */
  async function running(name: string): Promise<VmRow> {
    const vm = insert(name);
    const kernel = store.kernels.list()[0]!;
    runtime.attach(vm.id, await driver.start(driver.prepare(launchSpec(vm, kernel, stateDir, 'tcg', 2222))));
    return vm;
  }

  const dirOf = (vm: VmRow): string => vmFiles(stateDir, vm.id).dir;
  const row = (vm: VmRow): VmRow => store.vms.getById(vm.id)!;

  /** A new daemon on the same host: new driver, runtime and lifecycle; then reconcile. */
  async function restart(): Promise<Awaited<ReturnType<VmLifecycle['reconcile']>>> {
    lc.close();
    driver = new FakeVmmDriver({ host });
    lc = makeLifecycle(driver);
    return lc.reconcile();
  }

  it('the state machine: pausing and resuming are the only ways into and out of a save', () => {
    expect(canTransition('running', 'pausing')).toBe(true);
    expect(canTransition('pausing', 'paused')).toBe(true);
    expect(canTransition('pausing', 'running')).toBe(true); // a failed save continues the guest
    expect(canTransition('paused', 'resuming')).toBe(true);
    expect(canTransition('resuming', 'running')).toBe(true);
    expect(canTransition('resuming', 'paused')).toBe(true); // failed before the save was used
    expect(canTransition('stopped', 'pausing')).toBe(false);
    expect(canTransition('pausing', 'resuming')).toBe(false);
    expect(canTransition('paused', 'deleting')).toBe(false); // delete discards (stops) first
  });

  it('pause saves the state, commits it, ends the VMM and records paused with the saved size', async () => {
    const vm = await running('p1');
    const pid = runtime.get(vm.id)!.pid;
    const after = await lc.pause(vm);
    expect(after.state).toBe('paused');
    expect(after.savedState?.bytes).toBeGreaterThan(0);
    expect(after.stateReason).toMatch(/^saved to disk at .*; resume with: banger vm resume p1$/);
    // The VMM is gone (its exit asked for: no last_exit), the save is committed.
    expect(runtime.isRunning(vm.id)).toBe(false);
    expect(host.byId(vm.id)!.status).toBe('gone');
    expect(after.lastExit).toBeNull();
    const p = savedPaths(dirOf(vm));
    expect(existsSync(p.state) && existsSync(p.manifest)).toBe(true);
    expect(existsSync(p.stateTmp)).toBe(false);
    const m = JSON.parse(readFileSync(p.manifest, 'utf8')) as SavedManifest;
    expect(m.bytes).toBe(after.savedState!.bytes);
    expect(m.spec.incoming).toBeUndefined();
    expect(m.spec.tscKhz).toBe(2_000_000); // pinned from the command line the VMM ran with
    expect(driver.ops()).toEqual(expect.arrayContaining([`saveState ${vm.id}`, `kill ${vm.id} SIGKILL`]));
    expect(pid).toBeGreaterThan(0);
    // Pausing again, or pausing a stopped VM, is a conflict.
    await expect(lc.pause(row(vm))).rejects.toMatchObject({ code: 'conflict' });
    const stopped = insert('p1s', 'stopped');
    await expect(lc.pause(stopped)).rejects.toMatchObject({ code: 'conflict' });
  });

  it('a failed save leaves the VM running (cont) with nothing saved, and says why', async () => {
    const vm = await running('p2');
    driver.failOn('saveState', { target: vm.id, error: 'no space left on device while saving' });
    await expect(lc.pause(vm)).rejects.toMatchObject({
      code: 'failed',
      message: expect.stringMatching(/pausing p2 failed; it keeps running: .*no space left/),
    });
    expect(row(vm).state).toBe('running');
    expect(row(vm).savedState).toBeNull();
    expect(runtime.isRunning(vm.id)).toBe(true);
    expect(host.byId(vm.id)!.status).toBe('running');
    expect(driver.ops()).toContain(`resume ${vm.id}`);
    const p = savedPaths(dirOf(vm));
    expect(existsSync(p.stateTmp) || existsSync(p.state) || existsSync(p.manifest)).toBe(false);
  });

  it('a VM paused by QEMU (in memory) is not paused to disk: resume it first', async () => {
    const vm = await running('p3');
    host.ioError(vm.id);
    await new Promise((r) => setTimeout(r, 20));
    expect(row(vm).state).toBe('paused');
    await expect(lc.pause(row(vm))).rejects.toMatchObject({
      code: 'conflict',
      message: expect.stringContaining('resume it first'),
    });
  });

  it('resume starts the saved configuration with -incoming defer, loads, consumes the save, continues', async () => {
    const vm = await running('r1');
    await lc.pause(vm);
    const before = driver.ops().length;
    const after = await lc.resume(row(vm));
    expect(after.state).toBe('running');
    expect(after.savedState).toBeNull();
    expect(after.stateReason).toBeNull();
    expect(readied).toEqual(['r1']);
    expect(runtime.isRunning(vm.id)).toBe(true);
    expect(host.byId(vm.id)!.status).toBe('running');
    expect(
      driver
        .ops()
        .slice(before)
        .filter((o) => !o.startsWith('waitExit')),
    ).toEqual([`prepare ${vm.id}`, `start ${vm.id}`, `loadState ${vm.id}`, `resume ${vm.id}`]);
    // Same VM, same configuration: only the forwarded port and -incoming differ.
    const plan = driver.transcript.filter((t) => t.op === 'start').at(-1)!;
    expect(plan.target).toBe(vm.id);
    const p = savedPaths(dirOf(vm));
    expect(existsSync(p.state) || existsSync(p.manifest)).toBe(false);
  });

  it('a VM resumed from disk can be paused again (its VMM runs the saved configuration)', async () => {
    const vm = await running('r0');
    await lc.pause(vm);
    await lc.resume(row(vm));
    const again = await lc.pause(row(vm));
    expect(again.state).toBe('paused');
    expect((await lc.resume(again)).state).toBe('running');
  });

  it('vm start of a VM paused to disk resumes it (not a cold boot)', async () => {
    const vm = await running('r2');
    await lc.pause(vm);
    const after = await lc.start(row(vm));
    expect(after.state).toBe('running');
    expect(driver.ops()).toContain(`loadState ${vm.id}`);
    expect(after.bootCount).toBe(0); // a resume is not a boot
  });

  it('a resume that fails before the save is used keeps it (paused); after, the VM is error', async () => {
    const vm = await running('r3');
    await lc.pause(vm);
    driver.failOn('loadState', { target: vm.id, error: 'restoring VM state failed' });
    await expect(lc.resume(row(vm))).rejects.toThrow(/restoring VM state failed/);
    expect(row(vm)).toMatchObject({ state: 'paused' });
    expect(row(vm).savedState).not.toBeNull();
    expect(row(vm).stateReason).toMatch(/^resume failed \(.*\); the saved state is kept; saved to disk at/);
    expect(runtime.isRunning(vm.id)).toBe(false);
    expect(await readSaved(dirOf(vm), vm.id)).toBeDefined();

    readyFails = true;
    await expect(lc.resume(row(vm))).rejects.toThrow(/ssh did not answer/);
    expect(row(vm).state).toBe('error');
    expect(row(vm).stateReason).toMatch(/resume failed after its saved state was used/);
    expect(row(vm).savedState).toBeNull();
    expect(runtime.isRunning(vm.id)).toBe(false);
  });

  it('a resume whose cont fails after the save was used leaves no save files; start-up removes any left', async () => {
    const vm = await running('r4');
    await lc.pause(vm);
    driver.failOn('resume', { target: vm.id, error: 'cont refused' });
    await expect(lc.resume(row(vm))).rejects.toThrow(/cont refused/);
    expect(row(vm).state).toBe('error');
    const p = savedPaths(dirOf(vm));
    expect([p.manifest, p.state, p.ram].filter((f) => existsSync(f))).toEqual([]);
    // What an earlier daemon left beside a VM not paused (no manifest): no save, removed.
    writeFileSync(p.state, 'used state');
    writeFileSync(p.ram, 'used ram');
    await restart();
    expect(row(vm).state).toBe('error');
    expect([p.state, p.ram].filter((f) => existsSync(f))).toEqual([]);
  });

  it('stop of a VM paused to disk discards its save (stopped); delete removes it all', async () => {
    const vm = await running('s1');
    await lc.pause(vm);
    const r = await lc.stop(row(vm));
    expect(r.row.state).toBe('stopped');
    expect(r.row.stateReason).toMatch(/saved state was discarded/);
    expect(r.row.savedState).toBeNull();
    expect(existsSync(savedPaths(dirOf(vm)).state)).toBe(false);

    const vm2 = await running('s2');
    await lc.pause(vm2);
    await lc.delete(row(vm2));
    expect(store.vms.getById(vm2.id)).toBeUndefined();
    expect(existsSync(dirOf(vm2))).toBe(false);
  });

  it('a VM paused to disk survives a daemon restart (its missing VMM is not a crash) and a host reboot', async () => {
    const vm = await running('d1');
    await lc.pause(vm);
    const r = await restart();
    expect(r.saved).toEqual(['d1']);
    expect(row(vm).state).toBe('paused');
    expect(row(vm).lastExit).toBeNull();
    // A host reboot: no process survives; the files do.
    host.vms.clear();
    await restart();
    expect(row(vm).state).toBe('paused');
    expect((await lc.resume(row(vm))).state).toBe('running');
  });

  it('a paused VM whose save vanished is stopped at start-up, with why', async () => {
    const vm = await running('d2');
    await lc.pause(vm);
    writeFileSync(savedPaths(dirOf(vm)).state, 'truncated');
    const r = await restart();
    expect(r.stopped).toEqual(['d2']);
    expect(row(vm)).toMatchObject({ state: 'stopped', savedState: null, lastExit: null });
    expect(row(vm).stateReason).toMatch(/saved state is missing or incomplete/);
  });

  // ---- a daemon that died at each step (the world each crash point leaves) ------------------

  /** A VM whose daemon died in a pause after `upto`: the VMM, files and row as they were then. */
  async function crashedPause(
    name: string,
    upto: 'save' | 'mid_save' | 'commit' | 'exit' | 'record',
  ): Promise<VmRow> {
    const vm = await running(name);
    lc.setState(vm, 'pausing', 'saving the VM to disk');
    const dir = dirOf(vm);
    const p = savedPaths(dir);
    if (upto === 'save') return row(vm);
    const h = runtime.get(vm.id)!;
    await h.saveState!(p.stateTmp);
    if (upto === 'mid_save') {
      writeFileSync(p.stateTmp, 'half a state');
      // The writer's stderr file, which only a save that ends removes.
      writeFileSync(saveErrPath(p.stateTmp), '');
      return row(vm);
    }
    if (upto === 'commit') return row(vm);
    const m = (await import('../../src/vm/pause.ts')).savedPaths(dir);
    const bytes = readFileSync(m.stateTmp).length;
    const kernel = store.kernels.list()[0]!;
    await commitSaved(dir, {
      version: 1,
      vmId: vm.id,
      spec: launchSpec(vm, kernel, stateDir, 'tcg', 2222),
      bytes,
      savedAt: new Date().toISOString(),
      saveMs: 5,
    });
    if (upto === 'exit') return row(vm);
    host.exitVm(vm.id, { code: null, signal: 'SIGKILL' });
    return row(vm);
  }

  it.each(['save', 'mid_save', 'commit'] as const)(
    'reconcile: a pause interrupted at %s (not committed) continues the guest: running, nothing saved',
    async (upto) => {
      const vm = await crashedPause(`c-${upto.replace('_', '')}`, upto);
      const r = await restart();
      expect(row(vm)).toMatchObject({ state: 'running', savedState: null });
      expect(r.reattached).toEqual([vm.name]);
      expect(host.byId(vm.id)!.status).toBe('running');
      const p = savedPaths(dirOf(vm));
      expect([p.stateTmp, p.state, p.manifest, saveErrPath(p.stateTmp)].some((f) => existsSync(f))).toBe(
        false,
      );
      if (upto !== 'save') expect(driver.ops()).toContain(`cancelSave ${vm.id}`);
    },
  );

  it('reconcile: a pause interrupted before commit whose VMM died ends stopped', async () => {
    const vm = await crashedPause('c-dead', 'commit');
    host.exitVm(vm.id, { code: null, signal: 'SIGKILL' });
    await restart();
    expect(row(vm)).toMatchObject({ state: 'stopped' });
    expect(row(vm).stateReason).toMatch(/pause interrupted by a daemon restart/);
    expect(existsSync(savedPaths(dirOf(vm)).stateTmp)).toBe(false);
  });

  it.each(['exit', 'record'] as const)(
    'reconcile: a pause interrupted at %s (committed) is finished: paused to disk, no VMM',
    async (upto) => {
      const vm = await crashedPause(`c-${upto}`, upto);
      const r = await restart();
      expect(r.saved).toEqual([vm.name]);
      expect(row(vm).state).toBe('paused');
      expect(row(vm).savedState?.bytes).toBeGreaterThan(0);
      expect(row(vm).stateReason).toMatch(/^pause finished by a restarted daemon; saved to disk/);
      expect(host.byId(vm.id)!.status).toBe('gone');
      expect((await lc.resume(row(vm))).state).toBe('running');
    },
  );

  /** A VM paused to disk whose daemon died in a resume after `upto`. */
  async function crashedResume(
    name: string,
    upto: 'network' | 'boot' | 'load' | 'consume' | 'cont' | 'wait_ready',
  ): Promise<VmRow> {
    const vm = await running(name);
    await lc.pause(vm);
    lc.setState(vm.id, 'resuming', 'loading its saved state');
    if (upto === 'network') return row(vm);
    const m = (await readSaved(dirOf(vm), vm.id))!;
    const h = await driver.start(driver.prepare({ ...m.spec, incoming: 'defer' }));
    runtime.attach(vm.id, h);
    if (upto === 'boot') return row(vm);
    await h.loadState!(savedPaths(dirOf(vm)).state);
    if (upto === 'load') return row(vm);
    const { discardSaved } = await import('../../src/vm/pause.ts');
    await discardSaved(dirOf(vm));
    store.vms.update(vm.id, { savedState: null });
    if (upto === 'consume') return row(vm);
    await h.resume();
    return row(vm);
  }

  it.each(['network', 'boot', 'load'] as const)(
    'reconcile: a resume interrupted at %s (save not consumed) is paused again, its VMM ended',
    async (upto) => {
      const vm = await crashedResume(`r-${upto.replace('_', '')}`, upto);
      const r = await restart();
      expect(r.saved).toEqual([vm.name]);
      expect(row(vm).state).toBe('paused');
      expect(row(vm).stateReason).toMatch(/^resume interrupted by a daemon restart; saved to disk/);
      expect(host.byId(vm.id)!.status).toBe('gone');
      expect(await readSaved(dirOf(vm), vm.id)).toBeDefined();
    },
  );

  it.each(['consume', 'cont'] as const)(
    'reconcile: a resume interrupted after the save was consumed (%s) continues the loaded guest',
    async (upto) => {
      const vm = await crashedResume(`r-${upto}`, upto);
      const r = await restart();
      expect(r.reattached).toEqual([vm.name]);
      expect(row(vm)).toMatchObject({ state: 'running', savedState: null });
      expect(host.byId(vm.id)!.status).toBe('running');
      expect(clocked).toEqual([vm.name]);
    },
  );

  it.each(['pause', 'resume'] as const)(
    'reconcile: a %s interrupted whose guest is continued gets its egress proxy again (restricted, user mode)',
    async (what) => {
      const vm =
        what === 'pause'
          ? await crashedPause('e-pause', 'mid_save')
          : await crashedResume('e-resume', 'cont');
      store.vms.update(vm.id, { egress: parseEgress('none') });
      const attached: string[] = [];
      extraDeps = {
        egress: {
          events: new EgressEvents({ log: createLogger({ name: 'bangerd', stream: logs }) }),
          attach: (v) => attached.push(v.name),
          update: () => undefined,
          detach: () => undefined,
        },
      };
      const r = await restart();
      expect(r.reattached).toEqual([vm.name]);
      expect(row(vm).state).toBe('running');
      expect(attached).toEqual([vm.name]);
    },
  );

  it('reconcile: a resume interrupted after the save was consumed, VMM gone, ends stopped', async () => {
    const vm = await crashedResume('r-gone', 'cont');
    host.exitVm(vm.id, { code: null, signal: 'SIGKILL' });
    const r = await restart();
    expect(r.stopped).toEqual(['r-gone']);
    expect(row(vm).state).toBe('stopped');
    expect(row(vm).stateReason).toMatch(/after its saved state was used/);
  });

  // ---- format ram-file: RAM in a shared file on tmpfs (src/vm/guest-ram.ts) -------------------

  /**
   * A lifecycle whose VMs boot with their RAM in the user's RAM directory: each fake VMM's "RAM
   * file" is STATE/vmm-ram-<pid> (QEMU's unlinked file in real life), made at the RAM's size when
   * first looked up. `room` says whether the tmpfs has room at a resume.
   */
  function ramFileLifecycle(opts: { room?: boolean } = {}): {
    ramDir: string;
    vmmRam: (pid: number) => string;
  } {
    const root = join(stateDir, 'shm');
    const ramDir = guestRamDir(root, process.getuid!());
    mkdirSync(ramDir, { recursive: true });
    const vmmRam = (pid: number): string => join(stateDir, `vmm-ram-${pid}`);
    lc.close();
    extraDeps = {
      guestRamRoot: root,
      pauseRam: {
        find: async (h, spec) => {
          if (!spec.memory?.share) return undefined;
          const f = vmmRam(h.pid);
          if (!existsSync(f)) {
            writeFileSync(f, '');
            truncateSync(f, spec.memoryMiB * 1024 * 1024);
          }
          return f;
        },
        room: async () => (opts.room === false ? undefined : ramDir),
      },
    };
    lc = makeLifecycle(driver);
    return { ramDir, vmmRam };
  }

  async function runningWithRamFile(name: string, ramDir: string): Promise<VmRow> {
    const vm = insert(name);
    const kernel = store.kernels.list()[0]!;
    runtime.attach(
      vm.id,
      await driver.start(driver.prepare(launchSpec(vm, kernel, stateDir, 'tcg', 2222, undefined, ramDir))),
    );
    return vm;
  }

  /** Guest pages at 1 MiB into the RAM file. */
  const PAGES = Buffer.from('guest pages: tmpfs files and a counter');
  function writePages(file: string): void {
    const fd = openSync(file, 'r+');
    writeSync(fd, PAGES, 0, PAGES.length, 1 << 20);
    closeSync(fd);
  }
  function readPages(file: string): Buffer {
    const fd = openSync(file, 'r');
    const b = Buffer.alloc(PAGES.length);
    readSync(fd, b, 0, b.length, 1 << 20);
    closeSync(fd);
    return b;
  }

  it("a VM with its RAM in a file pauses as ram-file (device state alone, the RAM file copied) and resumes by filling the new VMM's RAM file", async () => {
    const { ramDir, vmmRam } = ramFileLifecycle();
    const vm = await runningWithRamFile('rf1', ramDir);
    const pid0 = runtime.get(vm.id)!.pid;
    // The RAM file as the pause finds it, with the guest's pages in it.
    await lc['pauseRamOps']().find(runtime.get(vm.id)!, { memory: { share: true }, memoryMiB: 256 } as never);
    writePages(vmmRam(pid0));
    const paused = await lc.pause(vm);
    expect(paused.state).toBe('paused');
    const p = savedPaths(dirOf(vm));
    const m = JSON.parse(readFileSync(p.manifest, 'utf8')) as SavedManifest;
    expect(m.format).toBe('ram-file');
    expect(m.ram?.bytes).toBe(256 * 1024 * 1024);
    expect(statSync(p.ram).size).toBe(256 * 1024 * 1024);
    expect(readPages(p.ram).equals(PAGES)).toBe(true);
    // vm list shows what the save holds on disk: the state and the RAM file's data.
    expect(paused.savedState?.bytes).toBe(m.bytes + m.ram!.dataBytes);
    expect(driver.transcript.find((o) => o.op === 'saveState')?.detail).toMatchObject({ ignoreShared: true });
    expect(existsSync(p.ramTmp)).toBe(false);

    const before = driver.transcript.length;
    const resumed = await lc.resume(row(vm));
    expect(resumed).toMatchObject({ state: 'running', savedState: null });
    const h = runtime.get(vm.id)!;
    // The new VMM maps the same RAM directory, shared (a second pause or a fork stays cheap),
    // its file holds the saved pages, and its state was loaded without RAM.
    expect((await readResumedSpec(dirOf(vm)))?.memory).toMatchObject({ backendFile: ramDir, share: true });
    expect(readPages(vmmRam(h.pid)).equals(PAGES)).toBe(true);
    expect(driver.transcript.slice(before).find((o) => o.op === 'loadState')?.detail).toMatchObject({
      ignoreShared: true,
    });
    // The save is consumed: nothing of it is left on disk.
    expect([p.manifest, p.state, p.ram, p.ramTmp].filter((f) => existsSync(f))).toEqual([]);
    // Paused again: ram-file again (its VMM runs with its RAM in the directory).
    writePages(vmmRam(h.pid));
    await lc.pause(row(vm));
    expect((JSON.parse(readFileSync(p.manifest, 'utf8')) as SavedManifest).format).toBe('ram-file');
    expect((await lc.resume(row(vm))).state).toBe('running');
  });

  it('without room on the tmpfs at resume, the VMM maps saved.ram copy-on-write; the consume unlinks it; its next pause is full', async () => {
    const { ramDir, vmmRam } = ramFileLifecycle({ room: false });
    const vm = await runningWithRamFile('rf2', ramDir);
    await lc['pauseRamOps']().find(runtime.get(vm.id)!, { memory: { share: true }, memoryMiB: 256 } as never);
    writePages(vmmRam(runtime.get(vm.id)!.pid));
    await lc.pause(vm);
    const p = savedPaths(dirOf(vm));
    expect((await lc.resume(row(vm))).state).toBe('running');
    expect((await readResumedSpec(dirOf(vm)))?.memory).toMatchObject({ backendFile: p.ram, share: false });
    expect(existsSync(p.ram)).toBe(false);
    // Its RAM is no longer a shared file in the directory: the whole stream next time, which
    // resumes too (QEMU makes the missing share=off file anew).
    await lc.pause(row(vm));
    expect((JSON.parse(readFileSync(p.manifest, 'utf8')) as SavedManifest).format).toBe('full');
    expect((await lc.resume(row(vm))).state).toBe('running');
  });

  it("a resume whose new VMM's RAM file is not the saved RAM's size fails before the save is used (paused, kept)", async () => {
    const { ramDir } = ramFileLifecycle();
    const vm = await runningWithRamFile('rf6', ramDir);
    await lc.pause(vm);
    // The next VMM's RAM file comes out at half the size the save recorded.
    const base = extraDeps.pauseRam!;
    extraDeps = {
      ...extraDeps,
      pauseRam: {
        ...base,
        find: async (h, spec) => {
          const f = await base.find!(h, spec);
          if (f) truncateSync(f, 128 * 1024 * 1024);
          return f;
        },
      },
    };
    lc.close();
    lc = makeLifecycle(driver);
    await expect(lc.resume(row(vm))).rejects.toThrow(
      /RAM file is 134217728 bytes and the saved one 268435456, the save recorded 268435456: not filled/,
    );
    expect(row(vm).state).toBe('paused');
    expect(await readSaved(dirOf(vm), vm.id)).toBeDefined();
    expect(driver.ops()).not.toContain(`resume ${vm.id}`);
  });

  it('a boot maps the RAM directory of the uid the daemon was given (not its own process uid)', async () => {
    const root = join(stateDir, 'shm-uid');
    mkdirSync(root);
    const other = process.getuid!() + 1;
    extraDeps = { guestRamRoot: root, uid: other };
    lc.close();
    lc = makeLifecycle(driver);
    const vm = insert('u1', 'stopped');
    // (The fake guest never answers: the start fails after its boot, which is what is looked at.)
    await lc.start(vm).catch(() => undefined);
    // The other uid's directory was asked for; made by this process it is not that user's own,
    // so the VM went without (anonymous RAM) rather than into this process's directory.
    expect(existsSync(guestRamDir(root, other))).toBe(true);
    expect(existsSync(guestRamDir(root, process.getuid!()))).toBe(false);
  });

  it('a save from before ram-file (no format in its manifest) still resumes as a full stream', async () => {
    const vm = await running('old1');
    await lc.pause(vm);
    const p = savedPaths(dirOf(vm));
    const m = JSON.parse(readFileSync(p.manifest, 'utf8')) as SavedManifest;
    delete m.format;
    writeFileSync(p.manifest, JSON.stringify(m));
    expect(await readSaved(dirOf(vm), vm.id)).toBeDefined();
    expect((await lc.resume(row(vm))).state).toBe('running');
    expect(
      driver.transcript.filter((o) => o.op === 'loadState').at(-1)?.detail?.ignoreShared,
    ).toBeUndefined();
  });

  it('a ram-file save whose RAM file is missing or cut short is no save', async () => {
    const { ramDir } = ramFileLifecycle();
    const vm = await runningWithRamFile('rf3', ramDir);
    await lc.pause(vm);
    const p = savedPaths(dirOf(vm));
    truncateSync(p.ram, 4096);
    expect(await readSaved(dirOf(vm), vm.id)).toBeUndefined();
    const r = await restart();
    expect(r.stopped).toEqual(['rf3']);
    expect(existsSync(p.ram)).toBe(false);
  });

  it('reconcile: a ram-file pause interrupted while copying the RAM (not committed) continues the guest and leaves no copy', async () => {
    const { ramDir } = ramFileLifecycle();
    const vm = await runningWithRamFile('rf4', ramDir);
    lc.setState(vm, 'pausing', 'saving the VM to disk');
    const p = savedPaths(dirOf(vm));
    await runtime.get(vm.id)!.saveState!(p.stateTmp, { ignoreShared: true });
    writeFileSync(p.ramTmp, 'half a RAM copy');
    const r = await restart();
    expect(r.reattached).toEqual(['rf4']);
    expect(row(vm)).toMatchObject({ state: 'running', savedState: null });
    expect([p.stateTmp, p.ramTmp, p.state, p.ram, p.manifest].filter((f) => existsSync(f))).toEqual([]);
  });

  it('reconcile: a ram-file resume interrupted while filling the RAM is paused again, the save whole', async () => {
    const { ramDir, vmmRam } = ramFileLifecycle();
    const vm = await runningWithRamFile('rf5', ramDir);
    await lc['pauseRamOps']().find(runtime.get(vm.id)!, { memory: { share: true }, memoryMiB: 256 } as never);
    writePages(vmmRam(runtime.get(vm.id)!.pid));
    await lc.pause(vm);
    lc.setState(vm.id, 'resuming', 'loading its saved state');
    const m = (await readSaved(dirOf(vm), vm.id))!;
    runtime.attach(vm.id, await driver.start(driver.prepare({ ...m.spec, incoming: 'defer' })));
    const r = await restart();
    expect(r.saved).toEqual(['rf5']);
    expect(row(vm).state).toBe('paused');
    expect(await readSaved(dirOf(vm), vm.id)).toBeDefined();
    expect((await lc.resume(row(vm))).state).toBe('running');
    expect(readPages(vmmRam(runtime.get(vm.id)!.pid)).equals(PAGES)).toBe(true);
  });

  it('reconcile: a stop interrupted while discarding a save (manifest gone) ends stopped', async () => {
    const vm = await running('x1');
    await lc.pause(vm);
    const { rmSync } = await import('node:fs');
    rmSync(savedPaths(dirOf(vm)).manifest);
    await restart();
    expect(row(vm)).toMatchObject({ state: 'stopped', savedState: null });
    expect(existsSync(savedPaths(dirOf(vm)).state)).toBe(false);
  });
});
