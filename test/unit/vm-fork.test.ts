// vm fork (src/vm/fork.ts, run by the lifecycle owner) against the recording fake VMM: the steps
// and what each leaves on disk and in the VMMs, the undo of a failure or a cancel at each stage
// (the forks removed, the source continued and running, its disk as it was or switched), the
// conflict for a source that is not running, start-up reconciliation of an interrupted fork, the
// fork files kept while a fork uses them, the children's names and their launch specs.
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeVmmDriver, FakeVmmHost } from '../../src/engine/index.ts';
import { buildQemuArgv } from '../../src/engine/qemu-argv.ts';
import { createLogger } from '../../src/log/logger.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { newId, openStore, type Store, type VmRow } from '../../src/store/index.ts';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { forkNames } from '../../src/daemon/services/vm-fork.ts';
import {
  FORK_DEPS,
  FORKING_JOURNAL,
  forkPaths,
  forkTemplateSpec,
  hasOpen,
  nextOverlay,
  readForkDeps,
  type ForkHooks,
} from '../../src/vm/fork.ts';
import { macFor, vmFiles } from '../../src/vm/layout.ts';
import { VmLifecycle, type LifecycleDeps } from '../../src/vm/lifecycle.ts';
import { launchSpec } from '../../src/vm/machine.ts';
import { findStateDirVmms } from '../../src/vm/orphans.ts';
import { rootlessNetwork } from '../../src/vm/network.ts';
import { VmRuntime } from '../../src/vm/runtime.ts';
import { sshPaths } from '../../src/vm/ssh.ts';
import { canTransition } from '../../src/vm/states.ts';
import { cloneLaunchSpec } from '../../src/vm/warm.ts';
import { guestRamDir } from '../../src/vm/guest-ram.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

describe('fork names', () => {
  const taken = (n: string): boolean => n === 'src-fork-1' || n === 'other';
  it('gives <source>-fork-<n>, the first free n, after the names given', () => {
    expect(forkNames('src', [], undefined, taken)).toEqual(['src-fork-2']);
    expect(forkNames('src', [], 3, taken)).toEqual(['src-fork-2', 'src-fork-3', 'src-fork-4']);
    expect(forkNames('src', ['a', 'b'], undefined, taken)).toEqual(['a', 'b']);
    expect(forkNames('src', ['a'], 2, taken)).toEqual(['a', 'src-fork-2']);
  });
  it('refuses a name in use, the source, a name twice, too many, a default name too long', () => {
    expect(() => forkNames('src', ['other'], undefined, taken)).toThrow(/already exists/);
    expect(() => forkNames('src', ['src'], undefined, taken)).toThrow(/already exists/);
    expect(() => forkNames('src', ['a', 'a'], undefined, taken)).toThrow(/given twice/);
    expect(() => forkNames('src', [], 17, taken)).toThrow(/at most 16/);
    expect(() => forkNames('x'.repeat(60), [], 1, () => false)).toThrow(/too long/);
  });
});

describe('fork launch specs', () => {
  const base = {
    id: 'src1',
    vmDir: '/s/vms/src1',
    kernel: '/k',
    cmdline: 'root=x',
    vcpus: 1,
    memoryMiB: 256,
    disks: [
      { path: '/s/vms/src1/root.qcow2', format: 'qcow2' as const },
      { path: '/s/vms/src1/seed.ext4', format: 'raw' as const, readOnly: true },
    ],
    net: { mode: 'user' as const, sshHostPort: 2222, mac: '52:54:00:00:00:01' },
    serialLog: '/s/vms/src1/serial.log',
    agentSocket: '/s/vms/src1/agent.sock',
    qgaSocket: '/s/vms/src1/qga.sock',
    accel: 'tcg' as const,
    tscKhz: 2_000_000,
  };
  const files = vmFiles('/s', 'kid1');

  it("a fork of a VM with anonymous RAM maps the file under the machine's RAM block name, keeps the balloon", () => {
    const tpl = forkTemplateSpec(base, '/s/forks/f/ram');
    expect(tpl.memory).toEqual({
      backendFile: '/s/forks/f/ram',
      share: true,
      backendId: 'microvm.ram',
      balloon: true,
    });
    const child = cloneLaunchSpec(tpl, { id: 'kid1', files, sshHostPort: 3333 });
    const src = buildQemuArgv(base).join(' ');
    const argv = buildQemuArgv(child).join(' ');
    expect(argv).toContain('-M microvm,memory-backend=microvm.ram');
    expect(argv).toContain('memory-backend-file,id=microvm.ram,size=256M,mem-path=/s/forks/f/ram,share=off');
    expect(argv).toContain('virtio-balloon-device,free-page-reporting=on');
    expect(argv.endsWith('-incoming defer')).toBe(true);
    // The device list is the source's, in its order (the state loads into it).
    const devices = (s: string): string[] => [...s.matchAll(/-device (\S+?)(,|\s)/g)].map((m) => m[1]!);
    expect(devices(argv)).toEqual(devices(src));
    expect(argv).toContain(`file=${files.overlay}`);
  });

  it('a fork of a warm clone keeps its RAM block name and its device list (no balloon)', () => {
    const clone = { ...base, memory: { backendFile: '/tpl/ram', share: false } };
    const tpl = forkTemplateSpec(clone, '/s/forks/f/ram');
    expect(tpl.memory).toMatchObject({ backendId: 'mem', balloon: false, share: true });
    expect(buildQemuArgv(tpl).join(' ')).not.toContain('virtio-balloon');
  });
});

describe("a fork's loader VMM", () => {
  it('is found by the start-up scan as the VMM of its fork directory (and stopped as nobody owns it)', () => {
    const tmp = shortTempDir('bfo');
    try {
      const state = join(tmp.dir, 'state');
      const fp = forkPaths(state, 'abc123');
      const argv = [
        '-name',
        'guest=fork-abc123',
        '-chardev',
        `file,id=serial0,path=${fp.dir}/loader.log,append=on`,
      ];
      const proc = join(tmp.dir, 'proc');
      mkdirSync(join(proc, '4243'), { recursive: true });
      writeFileSync(join(proc, '4243', 'status'), 'Name:\tqemu-system-x86\nUid:\t1000\t1000\t1000\t1000\n');
      writeFileSync(join(proc, '4243', 'comm'), 'qemu-system-x86\n');
      writeFileSync(join(proc, '4243', 'cmdline'), ['qemu-system-x86_64', ...argv, ''].join('\0'));
      expect(findStateDirVmms(state, 1000, proc)).toEqual([
        expect.objectContaining({ pid: 4243, dir: fp.dir }),
      ]);
    } finally {
      tmp.cleanup();
    }
  });
});

describe('the fork transitions', () => {
  it('the source goes running → pausing → running (or stopped); children creating → running', () => {
    expect(canTransition('running', 'pausing')).toBe(true);
    expect(canTransition('pausing', 'running')).toBe(true);
    expect(canTransition('pausing', 'stopped')).toBe(true);
    expect(canTransition('creating', 'running')).toBe(true);
  });
});

describe('VmLifecycle.fork', () => {
  const tmp = shortTempDir('bfk');
  afterAll(() => tmp.cleanup());
  let store: Store;
  let driver: FakeVmmDriver;
  let runtime: VmRuntime;
  let lc: VmLifecycle;
  let ops: OperationRegistry;
  let stateDir: string;
  let imageId: string;
  const logs = new MemoryLog();
  let calls: string[];
  let hooks: Partial<ForkHooks>;

  function makeLifecycle(extra: Partial<LifecycleDeps> = {}): VmLifecycle {
    const log = createLogger({ name: 'bangerd', stream: logs });
    runtime = new VmRuntime(driver, log);
    ops = new OperationRegistry(log);
    const deps: LifecycleDeps = {
      stateDir,
      runtime,
      log,
      ssh: sshPaths(stateDir),
      accel: async () => 'tcg',
      readyTimeoutMs: 1000,
      store,
      network: rootlessNetwork({ config: DEFAULT_CONFIG, store, log }),
      ops,
      installPubKey: async () => 'ssh-ed25519 AAAA test',
      resolveImage: async () => {
        const image = store.images.getById(imageId)!;
        return { image, kernel: store.kernels.getById(image.kernelId)! };
      },
      uid: process.getuid!(),
      // Every hook records itself; tests override one to fail.
      forkHooks: hooks,
      ...extra,
    };
    const l = new VmLifecycle(deps);
    runtime.listen(
      (id, expected, info) => l.onVmmExit(id, expected, info),
      (id, ev) => l.onVmmEvent(id, ev),
    );
    return l;
  }

  function defaultHooks(): Partial<ForkHooks> {
    return {
      quiesceBalloon: async (vm) => {
        calls.push(`quiesce ${vm.name}`);
        return ['virtio3'];
      },
      restoreBalloon: async (vm, d) => {
        calls.push(`restore ${vm.name} ${d.join(',')}`);
      },
      seedChild: async (vm) => {
        writeFileSync(vmFiles(stateDir, vm.id).seed, 'seed');
        return {
          hostKey: { privateKey: 'k', publicKey: `ssh-ed25519 KEY-${vm.name}` },
          machineId: 'm'.repeat(32),
        };
      },
      makeOverlay: async (base, path) => {
        writeFileSync(path, `overlay on ${base}`);
      },
      reidentify: async (vm) => {
        calls.push(`reidentify ${vm.name}`);
        return 'ok';
      },
      branch: async (vm, p, b) => {
        calls.push(`branch ${vm.name} ${p} ${b}`);
      },
      ready: async (vm) => {
        calls.push(`ready ${vm.name}`);
      },
    };
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
    driver = new FakeVmmDriver({ host: new FakeVmmHost() });
    calls = [];
    hooks = defaultHooks();
    lc = makeLifecycle();
  });
  afterEach(() => {
    lc.close();
    store.close();
  });

  async function runningSource(name = 'src', workspace: unknown = null, ramDir?: string): Promise<VmRow> {
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
      workspace,
    });
    mkdirSync(vmFiles(stateDir, id).dir, { recursive: true });
    writeFileSync(vmFiles(stateDir, id).overlay, 'source disk');
    const row = store.vms.writeState(id, { state: 'running', reason: null });
    const plan = driver.prepare(
      launchSpec(row, store.kernels.list()[0]!, stateDir, 'tcg', 2222, undefined, ramDir),
    );
    runtime.attach(id, await driver.start(plan));
    return row;
  }

  const fork = async (src: VmRow, names: string[]) => {
    const t = ops.begin(`op-${newId()}`, 'vm.fork', 'vm.fork.begin', { vm: src.name });
    const r = await lc.fork(t, src, names).catch(async (err: unknown) => {
      await t.rollback();
      t.fail(err);
      throw err;
    });
    t.succeed();
    return { t, r };
  };

  it('forks a running VM: steps in order, children running and re-identified, the source switched and running', async () => {
    const ws = { guest_path: '/root/repo', base_commit: 'abc', mode: 'tracked' };
    const src = await runningSource('src', ws);
    const oldDisk = statSync(vmFiles(stateDir, src.id).overlay).ino;
    const { t, r } = await fork(src, ['a', 'b']);
    expect(t.op.steps.map((s) => `${s.name}:${s.state}`)).toEqual([
      'prepare:done',
      'pause_source:done',
      'freeze_disk:done',
      'resume_source:done',
      'save:done',
      'start_children:done',
    ]);
    expect(r.vms.map((v) => [v.name, v.state])).toEqual([
      ['a', 'running'],
      ['b', 'running'],
    ]);
    expect(r.sourcePauseMs).toBeGreaterThanOrEqual(0);
    expect(store.vms.getById(src.id)!.state).toBe('running');
    // Each child: the source's workspace metadata, its own host key, re-identified, on its branch, then ready.
    for (const v of r.vms) {
      const row = store.vms.getById(v.id)!;
      expect(row.workspace).toEqual(ws);
      expect(row.sshHostKey).toBe(`ssh-ed25519 KEY-${v.name}`);
      expect(calls.indexOf(`reidentify ${v.name}`)).toBeLessThan(calls.indexOf(`ready ${v.name}`));
      expect(calls).toContain(`branch ${v.name} /root/repo banger/fork/${v.name}`);
      expect(await readForkDeps(vmFiles(stateDir, v.id).dir)).toEqual([r.forkId]);
    }
    expect(calls.slice(0, 2)).toEqual(['quiesce src', 'restore src virtio3']);
    // The disk: the old overlay is the fork's base (same inode), the source has a new one on it.
    const fp = forkPaths(stateDir, r.forkId);
    expect(statSync(fp.disk).ino).toBe(oldDisk);
    expect(readFileSync(vmFiles(stateDir, src.id).overlay, 'utf8')).toBe(`overlay on ${fp.disk}`);
    // Under a name of its own (QEMU reopens it by that name), the overlay's name a symlink to it.
    expect(readlinkSync(vmFiles(stateDir, src.id).overlay)).toBe(
      basename(nextOverlay(stateDir, src.id, r.forkId)),
    );
    expect(await readForkDeps(vmFiles(stateDir, src.id).dir)).toEqual([r.forkId]);
    expect(existsSync(join(vmFiles(stateDir, src.id).dir, FORKING_JOURNAL))).toBe(false);
    // RAM file and device state sealed, the full save gone.
    expect(statSync(fp.ram).mode & 0o777).toBe(0o444);
    expect(statSync(fp.state).mode & 0o777).toBe(0o444);
    expect(existsSync(fp.full)).toBe(false);
    // The VMMs: the source saved, switched, continued; a loader; each child from the shared state.
    const ops2 = driver.transcript.map(
      (o) =>
        `${o.op} ${o.target === src.id ? 'SRC' : o.target.startsWith('fork-') ? 'LOADER' : r.vms.some((v) => v.id === o.target) ? 'KID' : o.target}${o.detail && 'ignoreShared' in o.detail ? ' shared' : ''}`,
    );
    const want = [
      'saveState SRC',
      'replaceDiskTop SRC',
      'resume SRC',
      'start LOADER',
      'loadState LOADER',
      'saveState LOADER shared',
      'kill LOADER',
      'start KID',
      'loadState KID shared',
      'resume KID',
    ];
    let at = -1;
    for (const w of want) {
      const i = ops2.indexOf(w, at + 1);
      expect(i, `${w} after position ${at} in ${ops2.join(' | ')}`).toBeGreaterThan(at);
      if (!w.includes('KID')) at = i;
    }
    expect(runtime.isRunning(r.vms[0]!.id)).toBe(true);
  });

  it('a source with its RAM in a file: its device state alone, the RAM file copied while it is stopped, no loader', async () => {
    const root = join(stateDir, 'shm');
    const ramDir = guestRamDir(root, process.getuid!());
    mkdirSync(ramDir, { recursive: true });
    lc.close();
    lc = makeLifecycle({ guestRamRoot: root });
    // The source's RAM file (QEMU's unlinked file, reached through /proc in real life).
    const ramFile = join(stateDir, 'src-ram');
    writeFileSync(ramFile, Buffer.concat([Buffer.from('guest pages'), Buffer.alloc(1 << 20)]));
    hooks.sourceRam = async (h, spec) => {
      calls.push(`sourceRam ${spec.memory?.backendFile === ramDir && spec.memory.share}`);
      return ramFile;
    };
    const src = await runningSource('src', null, ramDir);
    const { t, r } = await fork(src, ['a']);
    expect(t.op.steps.map((s) => `${s.name}:${s.state}`)).toEqual([
      'prepare:done',
      'pause_source:done',
      'freeze_disk:done',
      'resume_source:done',
      'save:done',
      'start_children:done',
    ]);
    expect(calls).toContain('sourceRam true');
    expect(t.op.steps.find((s) => s.name === 'pause_source')?.detail).toMatch(/^path ram-file: /);
    const fp = forkPaths(stateDir, r.forkId);
    expect(readFileSync(fp.ram).equals(readFileSync(ramFile))).toBe(true);
    expect(statSync(fp.ram).mode & 0o777).toBe(0o444);
    expect(statSync(fp.state).mode & 0o777).toBe(0o444);
    expect(existsSync(fp.full)).toBe(false);
    const ops2 = driver.transcript.map(
      (o) =>
        `${o.op} ${o.target === src.id ? 'SRC' : o.target.startsWith('fork-') ? 'LOADER' : o.target === r.vms[0]!.id ? 'KID' : o.target}${o.detail && 'ignoreShared' in o.detail && o.detail.ignoreShared ? ' shared' : ''}`,
    );
    expect(ops2.filter((o) => /SRC|KID|LOADER/.test(o) && !/status|prepare|waitExit/.test(o))).toEqual([
      'start SRC',
      'saveState SRC shared',
      'replaceDiskTop SRC',
      'resume SRC',
      'start KID',
      'loadState KID shared',
      'resume KID',
    ]);
    expect(store.vms.getById(src.id)!.state).toBe('running');
    expect(r.vms.map((v) => v.state)).toEqual(['running']);
  });

  it('a RAM file copy that fails (disk full) undoes the fork: the source continued, no partial copy left', async () => {
    const root = join(stateDir, 'shm');
    const ramDir = guestRamDir(root, process.getuid!());
    mkdirSync(ramDir, { recursive: true });
    lc.close();
    lc = makeLifecycle({ guestRamRoot: root });
    hooks.sourceRam = async () => join(stateDir, 'src-ram');
    let dst = '';
    hooks.copyRam = async (_src, d) => {
      dst = d;
      writeFileSync(d, 'half a copy');
      throw new Error('cp: error writing: No space left on device');
    };
    const src = await runningSource('src', null, ramDir);
    await expect(fork(src, ['a'])).rejects.toThrow(/No space left/);
    expect(existsSync(dst)).toBe(false);
    expect(existsSync(join(dst, '..', 'state'))).toBe(false);
    expect(store.vms.getById(src.id)!.state).toBe('running');
    expect(store.vms.getByName('a')).toBeUndefined();
    expect(driver.transcript.filter((o) => o.target === src.id).map((o) => o.op)).toContain('resume');
  });

  it('a source whose RAM file is not found takes the full save and the loader, and says why', async () => {
    hooks.sourceRam = async () => undefined;
    const src = await runningSource();
    const { t } = await fork(src, ['a']);
    expect(t.op.steps.find((s) => s.name === 'pause_source')?.detail).toMatch(
      /^path full-save: the source has anonymous RAM/,
    );
    expect(driver.transcript.some((o) => o.op === 'start' && o.target.startsWith('fork-'))).toBe(true);
  });

  it('a second fork of the same source freezes the overlay it runs on now (the symlink followed)', async () => {
    const src = await runningSource();
    const first = await fork(src, ['a']);
    const second = await fork(store.vms.getById(src.id)!, ['b']);
    const ov = vmFiles(stateDir, src.id).overlay;
    expect(statSync(forkPaths(stateDir, second.r.forkId).disk).ino).toBe(
      statSync(nextOverlay(stateDir, src.id, first.r.forkId)).ino,
    );
    expect(readlinkSync(ov)).toBe(basename(nextOverlay(stateDir, src.id, second.r.forkId)));
    expect(await readForkDeps(vmFiles(stateDir, src.id).dir)).toEqual([first.r.forkId, second.r.forkId]);
    // The second fork's child depends on both bases (its disk chains through the first).
    expect(await readForkDeps(vmFiles(stateDir, second.r.vms[0]!.id).dir)).toEqual([
      first.r.forkId,
      second.r.forkId,
    ]);
  });

  it('a failure while starting the forks removes them; the source runs on, on its new overlay, the RAM file goes', async () => {
    const src = await runningSource();
    hooks.ready = async (vm) => {
      if (vm.name === 'b') throw new Error('ssh never answered');
    };
    await expect(fork(src, ['a', 'b'])).rejects.toThrow(/ssh never answered/);
    expect(store.vms.getByName('a')).toBeUndefined();
    expect(store.vms.getByName('b')).toBeUndefined();
    expect(store.vms.getById(src.id)!.state).toBe('running');
    expect(runtime.isRunning(src.id)).toBe(true);
    const [forkId] = await readForkDeps(vmFiles(stateDir, src.id).dir);
    const fp = forkPaths(stateDir, forkId!);
    // The base stays (the source's disk is on it); nothing else of the fork.
    expect(existsSync(fp.disk)).toBe(true);
    expect(existsSync(fp.ram)).toBe(false);
    expect(existsSync(fp.state)).toBe(false);
    // A fork interrupted at its save leaves a RAM file, the full save and the loader's files
    // (its overlay, log, sockets, pidfile): the sweep removes all but the base.
    writeFileSync(fp.ram, 'partial');
    writeFileSync(fp.full, 'full');
    for (const f of ['loader.qcow2', 'loader.log', 'qmp.sock', 'qemu.pid', 'handles.json'])
      writeFileSync(join(fp.dir, f), f);
    await lc.reconcile();
    expect(readdirSync(fp.dir)).toEqual([basename(fp.disk)]);
  });

  it('a failed save of the source undoes everything: no fork, the disk untouched, the guest continued', async () => {
    const src = await runningSource();
    driver.failOn('saveState', { target: src.id, error: 'no space left on device' });
    await expect(fork(src, ['a'])).rejects.toThrow(/no space/);
    expect(store.vms.getByName('a')).toBeUndefined();
    const row = store.vms.getById(src.id)!;
    expect(row.state).toBe('running');
    expect(readFileSync(vmFiles(stateDir, src.id).overlay, 'utf8')).toBe('source disk');
    expect(await readForkDeps(vmFiles(stateDir, src.id).dir)).toEqual([]);
    expect(driver.ops()).toContain(`resume ${src.id}`);
    expect(calls).toContain('restore src virtio3');
    expect(existsSync(join(vmFiles(stateDir, src.id).dir, FORKING_JOURNAL))).toBe(false);
  });

  it('a disk switch QEMU refuses removes the base link and the new overlay', async () => {
    const src = await runningSource();
    driver.failOn('replaceDiskTop', { error: 'Permission conflict' });
    await expect(fork(src, ['a'])).rejects.toThrow(/Permission conflict/);
    expect(readdirSync(vmFiles(stateDir, src.id).dir).filter((f) => /^root-.*\.qcow2$/.test(f))).toEqual([]);
    expect(readFileSync(vmFiles(stateDir, src.id).overlay, 'utf8')).toBe('source disk');
    expect(await readForkDeps(vmFiles(stateDir, src.id).dir)).toEqual([]);
    expect(store.vms.getById(src.id)!.state).toBe('running');
  });

  it('a cancel undoes it like a failure and the operation says canceled', async () => {
    const src = await runningSource();
    const t = ops.begin('op-cancel1', 'vm.fork', 'vm.fork.begin', { vm: 'src' });
    hooks.quiesceBalloon = async () => {
      t.abort.abort();
      return [];
    };
    const err = await lc.fork(t, src, ['a']).catch((e: unknown) => e);
    await t.rollback();
    t.fail(err);
    expect(t.op.state).toBe('canceled');
    expect(store.vms.getByName('a')).toBeUndefined();
    expect(store.vms.getById(src.id)!.state).toBe('running');
  });

  it('refuses a source that is not running, naming its state', async () => {
    const src = await runningSource();
    await lc.kill(src);
    const t = ops.begin('op-x1', 'vm.fork', 'vm.fork.begin', { vm: 'src' });
    await expect(lc.fork(t, store.vms.getById(src.id)!, ['a'])).rejects.toMatchObject({
      code: 'conflict',
      message: expect.stringMatching(/"src" is stopped; only a running VM can be forked \(start it first/),
    });
  });

  it('reconcile after a crash before the disk switch: base link and new overlay removed, the source continued, the children undone', async () => {
    const src = await runningSource();
    const forkId = 'f1';
    const fp = forkPaths(stateDir, forkId);
    mkdirSync(fp.dir, { recursive: true });
    writeFileSync(nextOverlay(stateDir, src.id, forkId), 'next');
    const { linkSync } = await import('node:fs');
    linkSync(vmFiles(stateDir, src.id).overlay, fp.disk);
    const kid = store.vms.insert({
      name: 'a',
      imageId,
      vcpus: 1,
      memoryMib: 256,
      diskSizeBytes: 1,
      networkMode: 'user',
      mac: macFor('k1'),
    });
    writeFileSync(
      join(vmFiles(stateDir, src.id).dir, FORKING_JOURNAL),
      JSON.stringify({ forkId, children: [kid.id] }),
    );
    store.vms.writeState(src.id, { state: 'pausing', reason: 'forking into a' });
    // A new daemon: handles gone, the VMM still there.
    lc.close();
    lc = makeLifecycle();
    const rep = await lc.reconcile();
    expect(rep.undone).toContain('a');
    expect(rep.reattached).toContain('src');
    expect(store.vms.getById(src.id)!.state).toBe('running');
    expect(existsSync(nextOverlay(stateDir, src.id, forkId))).toBe(false);
    expect(readFileSync(vmFiles(stateDir, src.id).overlay, 'utf8')).toBe('source disk');
    // Nobody uses the fork: its directory goes.
    expect(existsSync(fp.dir)).toBe(false);
    expect(existsSync(join(vmFiles(stateDir, src.id).dir, FORKING_JOURNAL))).toBe(false);
  });

  it('reconcile of an interrupted fork whose source VMM is gone: stopped, saying why, never running', async () => {
    const src = await runningSource();
    writeFileSync(
      join(vmFiles(stateDir, src.id).dir, FORKING_JOURNAL),
      JSON.stringify({ forkId: 'f2', children: [] }),
    );
    store.vms.writeState(src.id, { state: 'pausing', reason: 'forking into a' });
    await lc.kill(store.vms.getById(src.id)!).catch(() => undefined);
    store.vms.writeState(src.id, { state: 'pausing', reason: 'forking into a' });
    lc.close();
    lc = makeLifecycle();
    await lc.reconcile();
    const row = store.vms.getById(src.id)!;
    expect(row.state).toBe('stopped');
    expect(row.stateReason).toMatch(/fork interrupted by a daemon restart/);
  });

  it('hasOpen tells a file a process has open (how reconcile sees a switched disk)', async () => {
    const p = join(stateDir, 'open-me');
    writeFileSync(p, 'x');
    writeFileSync(join(stateDir, 'closed'), 'y');
    const fd = openSync(p, 'r');
    try {
      expect(await hasOpen(process.pid, p)).toBe(true);
      expect(await hasOpen(process.pid, join(stateDir, 'closed'))).toBe(false);
    } finally {
      closeSync(fd);
    }
  });

  it("the source's delete keeps the fork's files for the forks; the last fork's delete removes them", async () => {
    const src = await runningSource();
    const { r } = await fork(src, ['a']);
    const fp = forkPaths(stateDir, r.forkId);
    await lc.delete(store.vms.getById(src.id)!);
    expect(existsSync(fp.disk)).toBe(true);
    expect(existsSync(fp.ram)).toBe(true);
    await lc.delete(store.vms.getByName('a')!);
    expect(existsSync(fp.dir)).toBe(false);
    expect(existsSync(join(vmFiles(stateDir, r.vms[0]!.id).dir, FORK_DEPS))).toBe(false);
  });
});
