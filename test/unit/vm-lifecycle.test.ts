// The lifecycle owner (src/vm/lifecycle.ts) against the recording fake VMM: the transition table
// walked exhaustively, states written only through it, what QMP events and VMM exits turn into
// (paused with the reason, auto-resume once the disk has room, last_exit), and start-up
// reconciliation after a crash in any state (interrupted creates undone, starts and stops ended
// as stopped, deletes finished, reattached VMs keep their truthful state).
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeVmmDriver, FakeVmmHost } from '../../src/engine/index.ts';
import { createLogger } from '../../src/log/logger.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { newId, openStore, type Store, type VmRow } from '../../src/store/index.ts';
import { VmLifecycle, type LifecycleDeps } from '../../src/vm/lifecycle.ts';
import { macFor, vmFiles } from '../../src/vm/layout.ts';
import { launchSpec } from '../../src/vm/machine.ts';
import { VmRuntime } from '../../src/vm/runtime.ts';
import { rootlessNetwork } from '../../src/vm/network.ts';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { sshPaths } from '../../src/vm/ssh.ts';
import { canTransition, TRANSITIONS, TransitionError, VM_STATES, type VmState } from '../../src/vm/states.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('the VM state machine', () => {
  it('lists every state, and every target is a state', () => {
    expect(Object.keys(TRANSITIONS).sort()).toEqual([...VM_STATES].sort());
    for (const targets of Object.values(TRANSITIONS)) for (const t of targets) expect(VM_STATES).toContain(t);
  });

  it('keeps the rules a user relies on', () => {
    // A create ends running or stopped, never skipping to a state that claims more.
    expect(TRANSITIONS.creating).toEqual(['running', 'stopped', 'error']);
    expect(canTransition('stopped', 'running')).toBe(false); // only through starting
    expect(canTransition('running', 'paused')).toBe(true);
    expect(canTransition('paused', 'running')).toBe(true);
    expect(canTransition('deleting', 'running')).toBe(false);
    expect(TRANSITIONS.deleting).toEqual([]);
  });
});

describe('VmLifecycle', () => {
  const tmp = shortTempDir('blc');
  afterAll(() => tmp.cleanup());
  let store: Store;
  let host: FakeVmmHost;
  let driver: FakeVmmDriver;
  let runtime: VmRuntime;
  let lc: VmLifecycle;
  let stateDir: string;
  let imageId: string;
  let freeBytes = 0;
  const logs = new MemoryLog();

  function makeLifecycle(d = driver): VmLifecycle {
    runtime = new VmRuntime(d, createLogger({ name: 'bangerd', stream: logs }));
    const deps: LifecycleDeps = {
      stateDir,
      runtime,
      log: createLogger({ name: 'bangerd', stream: logs }),
      ssh: sshPaths(stateDir),
      accel: async () => 'tcg',
      readyTimeoutMs: 1000,
      store,
      network: rootlessNetwork({
        config: DEFAULT_CONFIG,
        store,
        log: createLogger({ name: 'bangerd', stream: logs }),
      }),
      ops: new OperationRegistry(createLogger({ name: 'bangerd', stream: logs })),
      installPubKey: async () => 'ssh-ed25519 AAAA test',
      resolveImage: async () => {
        const image = store.images.getById(imageId)!;
        return { image, kernel: store.kernels.getById(image.kernelId)! };
      },
      freeBytes: async () => freeBytes,
      resumePollMs: 20,
      resumeFreeBytes: 1000,
      // No real process of the state dir can exist in these tests; /proc is scanned anyway.
      uid: process.getuid!(),
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
    freeBytes = 0;
    lc = makeLifecycle();
  });
  afterEach(() => {
    lc.close();
    store.close();
  });

  function insert(name: string, state: VmState = 'creating'): VmRow {
    const id = newId();
    const row = store.vms.insert({
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
    return state === 'creating' ? row : store.vms.writeState(id, { state, reason: null });
  }

  /** Start a fake VMM for a VM and attach it, as a boot would. */
  async function boot(vm: VmRow): Promise<void> {
    const kernel = store.kernels.list()[0]!;
    const plan = driver.prepare(launchSpec(vm, kernel, stateDir, 'tcg', 2222));
    runtime.attach(vm.id, await driver.start(plan));
  }

  const until = async (cond: () => boolean, ms = 2000): Promise<void> => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  it("a rootless daemon's network is a null object: user networking; bridge or NAT is a clear error", async () => {
    const net = rootlessNetwork({
      config: DEFAULT_CONFIG,
      store,
      log: createLogger({ name: 'b', stream: logs }),
    });
    expect(await net.chooseMode(undefined, false)).toBe('user');
    expect(await net.chooseMode('user', false)).toBe('user');
    await expect(net.chooseMode('bridge', false)).rejects.toMatchObject({
      code: 'invalid',
      message: expect.stringContaining('needs the root helper'),
    });
    await expect(net.chooseMode(undefined, true)).rejects.toMatchObject({
      code: 'invalid',
      message: expect.stringContaining('--nat needs bridge networking'),
    });
  });

  it("reconcile re-seals a finished template's RAM file a crashed clone start left writable; removes an unfinished one", async () => {
    const done = join(stateDir, 'images', 'img', 'warm', 'aaaaaaaaaaaaaaaa');
    const half = join(stateDir, 'images', 'img', 'warm', 'bbbbbbbbbbbbbbbb');
    mkdirSync(done, { recursive: true });
    mkdirSync(half, { recursive: true });
    writeFileSync(join(done, 'ram'), 'x', { mode: 0o644 });
    lc.close();
    lc = makeLifecycle();
    const r = await new VmLifecycle({
      ...(lc as unknown as { d: LifecycleDeps }).d,
      templateDirs: async () => [
        { dir: done, finished: true },
        { dir: half, finished: false },
      ],
    }).reconcile();
    expect(statSync(join(done, 'ram')).mode & 0o777).toBe(0o444);
    expect(r.templates).toEqual([half]);
    expect(existsSync(half)).toBe(false);
  });

  it('setState allows exactly the transitions of the table, and nothing else', () => {
    for (const from of VM_STATES) {
      for (const to of VM_STATES) {
        const vm = insert(`v-${from}-${to}`, from);
        const allowed = from === to || canTransition(from, to);
        if (allowed) {
          expect(lc.setState(vm, to, 'why').state).toBe(to);
        } else {
          expect(() => lc.setState(vm, to)).toThrow(TransitionError);
          expect(store.vms.getById(vm.id)!.state).toBe(from);
        }
      }
    }
  });

  it('entering error keeps the reason as last_error; entering running clears it', () => {
    const vm = insert('e', 'stopped');
    lc.setState(vm, 'starting');
    const e = lc.setState(vm, 'error', 'start failed: boom');
    expect(e).toMatchObject({
      state: 'error',
      lastError: 'start failed: boom',
      stateReason: 'start failed: boom',
    });
    lc.setState(vm, 'starting');
    expect(lc.setState(vm, 'running')).toMatchObject({ lastError: null, stateReason: null });
  });

  it('no code outside the lifecycle writes a VM state', () => {
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const n of readdirSync(dir)) {
        const p = join(dir, n);
        if (statSync(p).isDirectory()) walk(p);
        else if (p.endsWith('.ts') && /\.writeState\(/.test(readFileSync(p, 'utf8')))
          offenders.push(p.slice(ROOT.length));
      }
    };
    walk(join(ROOT, 'src'));
    expect(offenders).toEqual(['src/vm/lifecycle.ts']);
  });

  it('a guest paused on a full host disk is paused with the reason, and resumes once there is room', async () => {
    const vm = insert('full', 'running');
    await boot(vm);
    host.ioError(vm.id, { nospace: true, device: 'disk0' });
    await until(() => store.vms.getById(vm.id)!.state === 'paused');
    const p = store.vms.getById(vm.id)!;
    expect(p.stateReason).toMatch(
      /^host disk full at .*\(disk0: No space left on device\); resumes by itself/,
    );
    // Still no room: stays paused.
    await new Promise((r) => setTimeout(r, 100));
    expect(store.vms.getById(vm.id)!.state).toBe('paused');
    expect(driver.ops()).not.toContain(`resume ${vm.id}`);
    freeBytes = 1 << 20;
    await until(() => store.vms.getById(vm.id)!.state === 'running');
    expect(driver.ops()).toContain(`resume ${vm.id}`);
    expect(store.vms.getById(vm.id)!.stateReason).toBeNull();
  });

  it('a disk still full after the resume pauses the VM again', async () => {
    const vm = insert('again', 'running');
    await boot(vm);
    host.setResumeBehaviour(vm.id, 'io-error');
    host.ioError(vm.id, { nospace: true });
    await until(() => store.vms.getById(vm.id)!.state === 'paused');
    freeBytes = 1 << 20;
    await until(() => driver.ops().includes(`resume ${vm.id}`));
    await until(() => store.vms.getById(vm.id)!.state === 'paused');
  });

  it('vm resume: refuses a VM that is not paused, resumes one that is', async () => {
    const vm = insert('r', 'running');
    await boot(vm);
    await expect(lc.resume(vm)).rejects.toMatchObject({ code: 'conflict' });
    host.ioError(vm.id, { nospace: false, reason: 'Input/output error' });
    await until(() => store.vms.getById(vm.id)!.state === 'paused');
    expect(store.vms.getById(vm.id)!.stateReason).toMatch(
      /^host I\/O error at .*after fixing it: banger vm resume r/,
    );
    expect((await lc.resume(vm)).state).toBe('running');
    const stopped = insert('s', 'stopped');
    await expect(lc.resume(stopped)).rejects.toMatchObject({ code: 'not_running' });
  });

  it('an unexpected VMM exit is recorded as last_exit and the VM is stopped with why', async () => {
    const vm = insert('dies', 'running');
    await boot(vm);
    host.exitVm(vm.id, { code: null, signal: 'SIGKILL', reason: 'killed by signal SIGKILL' });
    await until(() => store.vms.getById(vm.id)!.state === 'stopped');
    const row = store.vms.getById(vm.id)!;
    expect(row.lastExit).toMatch(/^killed by signal SIGKILL at \d{4}-/);
    expect(row.stateReason).toBe('the VMM killed by signal SIGKILL');
  });

  it('stop and kill are expected exits: no last_exit', async () => {
    const vm = insert('calm', 'running');
    await boot(vm);
    const r = await lc.stop(vm, 1000);
    expect(r).toMatchObject({ clean: true, forced: false });
    expect(store.vms.getById(vm.id)).toMatchObject({ state: 'stopped', lastExit: null });
    const vm2 = insert('hard', 'running');
    await boot(vm2);
    expect((await lc.kill(vm2)).state).toBe('stopped');
    expect(store.vms.getById(vm2.id)!.lastExit).toBeNull();
  });

  it('a paused VM is killed by stop (it cannot answer the power button)', async () => {
    const vm = insert('pz', 'running');
    await boot(vm);
    host.ioError(vm.id);
    await until(() => store.vms.getById(vm.id)!.state === 'paused');
    const r = await lc.stop(vm, 1000);
    expect(r.forced).toBe(true);
    expect(store.vms.getById(vm.id)).toMatchObject({ state: 'stopped', stateReason: 'killed while paused' });
  });

  it('one verb at a time per VM', async () => {
    const vm = insert('busy', 'running');
    await boot(vm);
    host.setPowerdownBehaviour(vm.id, 'timeout');
    const stopping = lc.stop(vm, 300);
    await expect(lc.delete(vm)).rejects.toMatchObject({
      code: 'conflict',
      message: expect.stringContaining('busy (stopping)'),
    });
    await stopping;
  });

  it('reconcile after a crash: creates undone, starts/stops stopped, deletes finished, live VMs kept', async () => {
    const creating = insert('c1'); // interrupted create, VMM running (crash during restore)
    await boot(creating);
    const creatingNoVmm = insert('c2'); // interrupted create before boot
    const starting = insert('st', 'stopped');
    lc.setState(starting, 'starting');
    await boot(starting);
    const stopping = insert('sp', 'running');
    lc.setState(stopping, 'stopping');
    await boot(stopping);
    const deleting = insert('dl', 'stopped');
    lc.setState(deleting, 'deleting');
    const live = insert('live', 'running');
    await boot(live);
    const pausedWhileAway = insert('pa', 'running');
    await boot(pausedWhileAway);
    const gone = insert('gone', 'running');
    const stray = insert('stray', 'stopped');
    await boot(stray);
    host.ioError(pausedWhileAway.id); // before the restart: nobody hears it

    // The daemon dies; a new one (new driver on the same host, new runtime) reconciles.
    lc.close();
    const driver2 = new FakeVmmDriver({ host });
    lc = makeLifecycle(driver2);
    const r = await lc.reconcile();

    expect(r.undone.sort()).toEqual(['c1', 'c2']);
    for (const vm of [creating, creatingNoVmm]) {
      expect(store.vms.getById(vm.id)).toBeUndefined();
      expect(existsSync(vmFiles(stateDir, vm.id).dir)).toBe(false);
      expect(host.byId(vm.id)?.status ?? 'gone').toBe('gone');
    }
    expect(store.vms.getById(starting.id)).toMatchObject({
      state: 'stopped',
      stateReason: 'start interrupted by a daemon restart',
    });
    expect(store.vms.getById(stopping.id)).toMatchObject({
      state: 'stopped',
      stateReason: 'stop interrupted by a daemon restart',
    });
    expect(host.byId(starting.id)!.status).toBe('gone');
    expect(host.byId(stopping.id)!.status).toBe('gone');
    expect(r.deleted).toEqual(['dl']);
    expect(store.vms.getById(deleting.id)).toBeUndefined();
    expect(existsSync(vmFiles(stateDir, deleting.id).dir)).toBe(false);
    expect(store.vms.getById(live.id)!.state).toBe('running');
    expect(runtime.isRunning(live.id)).toBe(true);
    expect(store.vms.getById(pausedWhileAway.id)).toMatchObject({ state: 'paused' });
    expect(store.vms.getById(pausedWhileAway.id)!.stateReason).toMatch(
      /host I\/O error .*most likely a full disk/,
    );
    expect(store.vms.getById(gone.id)).toMatchObject({
      state: 'stopped',
      stateReason: 'the VMM exited while the daemon was away',
    });
    expect(store.vms.getById(gone.id)!.lastExit).toMatch(/^exited while the daemon was away/);
    // A VMM running for a VM recorded stopped answers as nobody: stopped.
    expect(host.byId(stray.id)!.status).toBe('gone');
    expect(store.vms.getById(stray.id)!.state).toBe('stopped');
  });
});
