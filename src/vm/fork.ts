// `vm fork`: copies of a running VM, processes and tmpfs included, each with its own identity.
//
// 1. prepare: the children's rows (`creating`), directories, seeds (their own host key,
//    machine-id, hostname) and disk overlays on the base-to-be; the source's balloon driver is
//    unbound in the guest (below); a journal (`forking.json`) in the source's directory.
// 2. pause_source: QMP stop, then one of two paths (the step says which ran):
//    - file-backed RAM (a VM booted with its RAM in a file on tmpfs, src/vm/guest-ram.ts): its
//      device state alone (x-ignore-shared, ~70 KB) to `state`, and its RAM file copied to the
//      fork's `ram` as it is (holes stay holes) while the guest is stopped;
//    - otherwise (anonymous RAM, or RAM mapped from a template's or fork's file: warm clones,
//      fork children, VMs booted before RAM files): a full migration (device state and RAM) to
//      `full.state`, for the loader in step 5.
//    Both into the fork's directory STATE/forks/<fork id>/.
// 3. freeze_disk: the source's disk becomes the read-only base `disk.qcow2` of the fork (a hard
//    link of its overlay), and the running source switches to a new overlay on it (QMP
//    blockdev-snapshot-sync, mode existing) under a name of its own; the overlay's name in its
//    argv becomes a symlink to it, so its argv and every later cold start keep working.
// 4. resume_source: `cont`. The source continues in its own VMM with its own RAM: it never maps
//    the fork's RAM file (docs/snapshots.md, Fork, says why).
// 5. save: file-backed path: `ram` and `state` are sealed read-only, nothing else. Full path: a
//    short-lived loader QEMU with the source's configuration, its RAM the fork's `ram` file
//    mapped share=on, loads `full.state` (the RAM goes into the file), then saves only its device
//    state with x-ignore-shared to `state`; it is killed and `ram` and `state` are made
//    read-only. Either way the warm templates' format (src/vm/warm.ts), made from a running VM.
// 6. start_children: each child is a warm clone of that (cloneLaunchSpec, startFromSharedState:
//    `ram` mapped share=off, the device state loaded), re-identified through its guest agent
//    before anything can reach it (reidentifyClone), its workspace (if any) put on the branch
//    `banger/fork/<child>`, then SSH.
//
// Crash consistency: the children are rows in `creating` from step 1 (a restarted daemon undoes
// them like any create); the source is `pausing` from step 1 to 4 with the journal, and start-up
// reconciliation (reconcileFork) tells from the files and the VMM's open files whether its disk
// was switched, repairs the names, continues the guest and clears the journal. A fork's
// directory is kept while any VM's `forks.json` (the forks its disk or RAM depends on) names it.
import {
  chmod,
  link,
  mkdir,
  readdir,
  readFile,
  readlink,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { VmLaunchSpec, VmmHandle } from '../engine/index.ts';
import { QgaClient } from '../engine/qga.ts';
import { buildSeedImage, randomMachineId } from '../image/seed.ts';
import type { Logger } from '../log/logger.ts';
import type { OperationTracker } from '../ops/operations.ts';
import { newId, type Store, type VmRow, type VmState } from '../store/index.ts';
import { VmError } from './errors.ts';
import { run } from './exec.ts';
import { macFor, vmFiles } from './layout.ts';
import { attachEgress, markSerial, waitReady, type MachineDeps } from './machine.ts';
import { userNetEgress } from '../egress/types.ts';
import { writeResumedSpec } from './pause.ts';
import { releasePort, reservePort } from './ports.ts';
import { generateHostKey, hostKeyAlias, pinHostKey, type HostKeyPair } from './ssh.ts';
import { cloneLaunchSpec, startFromSharedState } from './warm.ts';
import { copyRamFile, findRamFile } from './guest-ram.ts';
import { MEMORY_BACKEND_ID } from '../engine/qemu-argv.ts';

/** The source's journal while it is paused for a fork. */
export const FORKING_JOURNAL = 'forking.json';
/** In a VM's directory: the forks whose files its disk chain or RAM uses. */
export const FORK_DEPS = 'forks.json';
/** The machine's default RAM block id (microvm): the RAM block of a VM with anonymous RAM. */
export const DEFAULT_RAM_ID = 'microvm.ram';
/** The git branch a fork's copy of the source's workspace is put on. */
export const forkBranch = (child: string): string => `banger/fork/${child}`;

export interface ForkPaths {
  dir: string;
  /** The source's disk as it was at the pause: the read-only base of every overlay after it. */
  disk: string;
  /** The guest RAM at the pause (read-only once saved; children map it copy-on-write). */
  ram: string;
  /** Device state saved with x-ignore-shared. */
  state: string;
  /** Device state and RAM (the source's save); removed once `ram` and `state` are made. */
  full: string;
}

export function forkPaths(stateDir: string, forkId: string): ForkPaths {
  const dir = join(stateDir, 'forks', forkId);
  return {
    dir,
    disk: join(dir, 'disk.qcow2'),
    ram: join(dir, 'ram'),
    state: join(dir, 'state'),
    full: join(dir, 'full.state'),
  };
}

/**
 * The new overlay a source switches to, under a name of its own for good: QEMU reopens an image
 * by the name it opened it with (`cont` after a migration re-activates the disk), so the file
 * keeps it, and the VM's overlay name (root.qcow2, in its argv) becomes a symlink to it.
 */
export function nextOverlay(stateDir: string, vmId: string, forkId: string): string {
  return join(vmFiles(stateDir, vmId).dir, `root-${forkId}.qcow2`);
}

/** Point the VM's overlay name at `target` (a file in the same directory), atomically. */
export async function pointOverlayAt(overlay: string, target: string): Promise<void> {
  const tmp = `${overlay}.tmp-link`;
  await rm(tmp, { force: true });
  await symlink(basename(target), tmp);
  await rename(tmp, overlay);
}

/** Whether the VM's overlay name already points at `target`. */
async function pointsAt(overlay: string, target: string): Promise<boolean> {
  return readlink(overlay).then(
    (l) => l === basename(target),
    () => false,
  );
}

export interface ForkJournal {
  forkId: string;
  children: string[];
  /** The balloon devices unbound in the source's guest (bound again when it continues). */
  balloon?: string[];
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(`${path}.tmp`, JSON.stringify(value) + '\n', { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

export async function readForkDeps(vmDir: string): Promise<string[]> {
  try {
    const v = JSON.parse(await readFile(join(vmDir, FORK_DEPS), 'utf8')) as unknown;
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

export function writeForkDeps(vmDir: string, ids: string[]): Promise<void> {
  return writeJson(join(vmDir, FORK_DEPS), [...new Set(ids)]);
}

export async function readJournal(vmDir: string): Promise<ForkJournal | undefined> {
  try {
    return JSON.parse(await readFile(join(vmDir, FORKING_JOURNAL), 'utf8')) as ForkJournal;
  } catch {
    return undefined;
  }
}

/**
 * The launch spec a fork's RAM file is used with: the source's, its RAM the fork's file (under
 * the RAM block name the source's state carries), and the balloon when the source has one. As
 * a "template" (share=on) it is the loader's; cloneLaunchSpec makes each child's from it.
 */
export function forkTemplateSpec(src: VmLaunchSpec, ram: string): VmLaunchSpec {
  const { incoming: _incoming, ...rest } = src;
  return {
    ...rest,
    memory: {
      backendFile: ram,
      share: true,
      // A source with anonymous RAM has the machine's RAM block and the balloon; a warm clone
      // (or a fork) keeps the backend id and device list it had.
      backendId: src.memory ? (src.memory.backendId ?? 'mem') : DEFAULT_RAM_ID,
      balloon: src.memory ? src.memory.balloon === true : true,
    },
  };
}

/** Whether the VMM has the balloon device (its guest driver is unbound for a fork). */
export function hasBalloon(spec: VmLaunchSpec): boolean {
  return spec.memory === undefined || spec.memory.balloon === true;
}

/** What a fork does in guests and on disk beyond the VMM; tests replace it. */
export interface ForkHooks {
  /**
   * Unbind the guest's virtio_balloon driver; returns the devices unbound. A guest that maps a
   * shared RAM file copy-on-write must not report free pages: QEMU 7.2 would punch holes in
   * the file, which every other fork reads.
   */
  quiesceBalloon(vm: VmRow): Promise<string[]>;
  /** Bind them again (the source, whose RAM stays its own). */
  restoreBalloon(vm: VmRow, devices: string[]): Promise<void>;
  /** A child's seed (its own host key, machine-id, hostname), its host key pinned. */
  seedChild(vm: VmRow): Promise<{ hostKey: HostKeyPair; machineId: string }>;
  /** A qcow2 overlay backed by `base` (which may not exist yet). */
  makeOverlay(base: string, path: string, sizeBytes: number): Promise<void>;
  /** Re-identify a restored child through its guest agent; returns the summary. */
  reidentify(
    vm: VmRow,
    seeded: { hostKey: HostKeyPair; machineId: string },
    signal: AbortSignal,
  ): Promise<string>;
  /** Put the workspace at `guestPath` on `branch` (git checkout -B), if git is there. */
  branch(vm: VmRow, guestPath: string, branch: string): Promise<void>;
  /** Until the child answers SSH as itself. */
  ready(vm: VmRow, signal: AbortSignal): Promise<void>;
  /**
   * The running source's RAM file, when its VMM maps its RAM from a user RAM directory
   * (src/vm/guest-ram.ts): a path that opens it (/proc/<pid>/fd/N), else undefined.
   */
  sourceRam(h: VmmHandle, spec: VmLaunchSpec): Promise<string | undefined>;
  /** Copy a RAM file, holes as holes; returns the bytes of data copied. */
  copyRam(src: string, dst: string): Promise<number>;
}

export interface ForkDeps extends MachineDeps {
  store: Store;
  hooks: ForkHooks;
  setState: (vm: VmRow | string, to: VmState, reason?: string | null) => VmRow;
  /** The spec the source's VMM runs with (the lifecycle's runningSpec). */
  runningSpec: (vm: VmRow, h: VmmHandle) => Promise<VmLaunchSpec>;
  /** Remove a child completely (its VMM, network, host key, directory, row). */
  removeVm: (vm: VmRow) => Promise<void>;
  crash: (point: string) => void;
  /** Mark the children busy (`creating`) while the fork makes them, or free them. */
  markBusy?: (ids: string[], busy: boolean) => void;
}

export interface ForkRequest {
  source: VmRow;
  names: string[];
}

export interface ForkResult {
  vms: VmRow[];
  sourcePauseMs: number;
  forkId: string;
}

/** Forks being made by this daemon (their directories are not swept meanwhile). */
const inFlight = new Set<string>();

/** qemu-img overlay on a base that may not exist yet (`-u`: its size is given). */
export async function qcow2Overlay(base: string, path: string, sizeBytes: number): Promise<void> {
  await run('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-u',
    '-b',
    base,
    '-F',
    'qcow2',
    path,
    String(sizeBytes),
  ]);
}

/** The real hooks: the guest agent, ssh-keygen, the seed builder, qemu-img, SSH. */
export function hostForkHooks(
  d: MachineDeps & {
    installPubKey: () => Promise<string>;
    reidentify: ForkHooks['reidentify'];
  },
): ForkHooks {
  const qgaSh = async (vm: VmRow, script: string, args: string[]): Promise<string> => {
    const qga = await QgaClient.connect(vmFiles(d.stateDir, vm.id).qgaSocket, { timeoutMs: 15_000 });
    try {
      await qga.sync(15_000);
      const r = await qga.exec('/bin/sh', ['-c', script, 'banger-fork', ...args], {
        timeoutMs: 15_000,
        pollMs: 10,
      });
      if (r.exitcode !== 0)
        throw new VmError('failed', `in the guest of ${vm.name}: ${r.stderr.trim() || `exit ${r.exitcode}`}`);
      return r.stdout;
    } finally {
      qga.close();
    }
  };
  const drv = '/sys/bus/virtio/drivers/virtio_balloon';
  return {
    quiesceBalloon: async (vm) => {
      const out = await qgaSh(
        vm,
        `for d in ${drv}/virtio*; do [ -e "$d" ] || continue; n=\${d##*/}; echo "$n" > ${drv}/unbind && echo "$n"; done`,
        [],
      );
      return out.split('\n').filter((l) => /^virtio\d+$/.test(l));
    },
    restoreBalloon: async (vm, devices) => {
      if (devices.length === 0) return;
      await qgaSh(vm, `for n in "$@"; do echo "$n" > ${drv}/bind; done`, devices);
    },
    seedChild: async (vm) => {
      const files = vmFiles(d.stateDir, vm.id);
      const hostKey = await generateHostKey(files.dir);
      const machineId = randomMachineId();
      await buildSeedImage({
        path: files.seed,
        authorizedKeys: [await d.installPubKey()],
        hostKeyPrivate: hostKey.privateKey,
        hostKeyPublic: hostKey.publicKey,
        hostname: vm.name,
        machineId,
        nameservers: vm.networkMode === 'bridge' ? d.network.guest(vm).nameservers : ['10.0.2.3'],
      });
      await pinHostKey(d.ssh, hostKeyAlias(vm.name), hostKey.publicKey);
      return { hostKey, machineId };
    },
    makeOverlay: qcow2Overlay,
    reidentify: d.reidentify,
    branch: async (vm, guestPath, branch) => {
      await qgaSh(vm, 'command -v git >/dev/null 2>&1 || exit 0; cd "$1" && git checkout -q -B "$2"', [
        guestPath,
        branch,
      ]);
    },
    ready: async (vm, signal) => {
      await waitReady(d, vm, signal, undefined, { restored: true });
    },
    sourceRam: async (h, spec) =>
      spec.memory?.share && h.driver === 'qemu'
        ? findRamFile(h.pid, spec.memory.backendFile, spec.memory.backendId ?? MEMORY_BACKEND_ID)
        : undefined,
    copyRam: copyRamFile,
  };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Whether process `pid` has `path` (that inode) open: how a restarted daemon tells a switched disk. */
export async function hasOpen(pid: number, path: string): Promise<boolean> {
  const want = await stat(path).catch(() => undefined);
  if (!want) return false;
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const s = await stat(`/proc/${pid}/fd/${fd}`).catch(() => undefined);
    if (s && s.ino === want.ino && s.dev === want.dev) return true;
  }
  return false;
}

/**
 * Run a fork as operation `t`. The source is locked by the caller and `running` with a VMM; the
 * children's names are free and checked. Returns the children, `running`.
 */
export async function runFork(d: ForkDeps, t: OperationTracker, req: ForkRequest): Promise<ForkResult> {
  const src = req.source;
  const h = d.runtime.get(src.id);
  if (!h?.saveState || !h.loadState || !h.replaceDiskTop)
    throw new VmError('invalid', `vm "${src.name}": its VMM (${h?.driver ?? 'none'}) cannot be forked`);
  const srcFiles = vmFiles(d.stateDir, src.id);
  const forkId = newId();
  const fp = forkPaths(d.stateDir, forkId);
  inFlight.add(forkId);
  const busy: string[] = [];
  const dd: ForkDeps = {
    ...d,
    markBusy: (ids, on) => {
      busy.push(...ids);
      d.markBusy?.(ids, on);
    },
  };
  try {
    return await forkSteps(dd, t, req, h, srcFiles.dir, forkId, fp);
  } finally {
    d.markBusy?.(busy, false);
    inFlight.delete(forkId);
  }
}

async function forkSteps(
  d: ForkDeps,
  t: OperationTracker,
  req: ForkRequest,
  h: VmmHandle,
  srcDir: string,
  forkId: string,
  fp: ForkPaths,
): Promise<ForkResult> {
  const src = req.source;
  const srcFiles = vmFiles(d.stateDir, src.id);
  const srcSpec = await d.runningSpec(src, h);
  const srcDeps = await readForkDeps(srcDir);
  let balloon: string[] = [];
  let children: VmRow[] = [];
  const seeds = new Map<string, { hostKey: HostKeyPair; machineId: string }>();

  // Undone last: the children go, the source runs on (its guest continued if still stopped).
  const undoPrepare = async (): Promise<void> => {
    for (const c of children)
      await d
        .removeVm(c)
        .catch((err: unknown) =>
          d.log.warn({ vm: c.name, err: message(err) }, 'could not remove a fork child'),
        );
    await continueSource(d, src, h, balloon, 'fork failed');
    await rm(join(srcDir, FORKING_JOURNAL), { force: true });
  };

  // ---- prepare -------------------------------------------------------------------------------
  await t.step(
    'prepare',
    async () => {
      d.crash('vm.fork.prepare');
      try {
        await prepare();
      } catch (err) {
        await undoPrepare();
        throw err;
      }
    },
    undoPrepare,
  );

  async function prepare(): Promise<void> {
    await mkdir(fp.dir, { recursive: true, mode: 0o700 });
    children = d.store.transaction(() =>
      req.names.map((name) => {
        const id = newId();
        return d.store.vms.insert({
          id,
          name,
          imageId: src.imageId,
          state: 'creating',
          vcpus: src.vcpus,
          memoryMib: src.memoryMib,
          diskSizeBytes: src.diskSizeBytes,
          networkMode: src.networkMode,
          guestIp: src.networkMode === 'bridge' ? d.network.allocateGuestIp() : null,
          mac: macFor(id),
          nat: src.nat,
          workspace: src.workspace ?? null,
          // A warm clone's disk chain goes on through its template's disk: keep it too.
          warmTemplate: src.warmTemplate,
          egress: src.egress,
          secrets: src.secrets,
        });
      }),
    );
    // The children are this fork's until it ends: a vm delete of one meanwhile is refused as busy.
    d.markBusy?.(
      children.map((c) => c.id),
      true,
    );
    // The journal first: from here a crash leaves the source to be continued (reconcileFork).
    await writeJson(join(srcDir, FORKING_JOURNAL), {
      forkId,
      children: children.map((c) => c.id),
    } satisfies ForkJournal);
    d.setState(src, 'pausing', `forking into ${req.names.join(', ')}`);
    // The children's files and the source's balloon side by side (the guest agent, ssh-keygen
    // and qemu-img each wait on something else); the devices unbound are known before a failure
    // here is undone (undoPrepare binds them again).
    const quiesced = (hasBalloon(srcSpec) ? d.hooks.quiesceBalloon(src) : Promise.resolve([])).then(
      (b) => void (balloon = b),
    );
    try {
      await Promise.all(
        children.map(async (c) => {
          const files = vmFiles(d.stateDir, c.id);
          await mkdir(files.dir, { recursive: true, mode: 0o700 });
          seeds.set(c.id, await d.hooks.seedChild(c));
          const key = seeds.get(c.id)!.hostKey.publicKey;
          d.store.vms.update(c.id, { sshHostKey: key });
          await d.hooks.makeOverlay(fp.disk, files.overlay, c.diskSizeBytes);
          await writeForkDeps(files.dir, [...srcDeps, forkId]);
        }),
      );
    } finally {
      await quiesced.catch(() => undefined);
    }
    await quiesced;
    await writeJson(join(srcDir, FORKING_JOURNAL), {
      forkId,
      children: children.map((c) => c.id),
      balloon,
    } satisfies ForkJournal);
  }

  // ---- pause_source: stop + the device state and a copy of the RAM file, or a full save -------
  // The source's RAM file, looked up before the pause (it costs nothing to the guest).
  const ramSrc = await d.hooks.sourceRam(h, srcSpec).catch(() => undefined);
  const t0 = performance.now();
  await t.step('pause_source', async () => {
    d.crash('vm.fork.pause_source');
    if (ramSrc === undefined) {
      await h.saveState!(fp.full);
      t.progress(
        `path full-save: ${whyFullSave(srcSpec)}; the guest is stopped, its RAM and device state saved`,
      );
      return;
    }
    const saved = await h.saveState!(fp.state, { ignoreShared: true });
    const c0 = performance.now();
    // A copy that fails (disk full) leaves nothing behind: it can be most of the guest's RAM.
    const bytes = await d.hooks.copyRam(ramSrc, fp.ram).catch(async (err: unknown) => {
      await rm(fp.ram, { force: true });
      await rm(fp.state, { force: true });
      throw err;
    });
    t.progress(
      `path ram-file: device state saved in ${saved.durationMs} ms, RAM file copied (${Math.round(bytes / 2 ** 20)} MiB of data) in ${Math.round(performance.now() - c0)} ms`,
    );
  });

  // ---- freeze_disk ---------------------------------------------------------------------------
  await t.step('freeze_disk', async () => {
    d.crash('vm.fork.freeze_disk');
    const next = nextOverlay(d.stateDir, src.id, forkId);
    await d.hooks.makeOverlay(fp.disk, next, src.diskSizeBytes);
    let switched = false;
    try {
      // The file the overlay name stands for (a symlink after an earlier fork).
      await link(await realpath(srcFiles.overlay), fp.disk);
      await writeForkDeps(srcDir, [...srcDeps, forkId]);
      await h.replaceDiskTop!(0, next);
      switched = true;
      await pointOverlayAt(srcFiles.overlay, next);
    } catch (err) {
      if (!switched) await undoFreeze(d, src, forkId, srcDeps);
      throw err;
    }
  });

  // ---- resume_source -------------------------------------------------------------------------
  let sourcePauseMs = 0;
  let rebound: Promise<void> = Promise.resolve();
  await t.step('resume_source', async () => {
    d.crash('vm.fork.resume_source');
    await h.resume();
    sourcePauseMs = Math.round(performance.now() - t0);
    d.setState(src, 'running');
    t.progress(`the source was paused ${sourcePauseMs} ms`);
    // The balloon driver is bound again while the children start (a guest agent round trip
    // off the fork's critical path); the journal goes only once it is: until then it is what
    // tells a restarted daemon to bind it (reconcileFork).
    rebound = d.hooks
      .restoreBalloon(src, balloon)
      .catch((err: unknown) =>
        d.log.warn({ vm: src.name, err: message(err) }, 'could not rebind the balloon driver'),
      )
      .then(() => rm(join(srcDir, FORKING_JOURNAL), { force: true }))
      .catch(() => undefined);
    balloon = [];
  });

  // ---- save: the loader makes the shared RAM file and the device state ------------------------
  const tplSpec = forkTemplateSpec(srcSpec, fp.ram);
  // Undone: the RAM file and state go (the base stays: the source's disk is on it now).
  const dropRam = async (): Promise<void> => {
    await rm(fp.ram, { force: true });
    await rm(fp.state, { force: true });
    await rm(fp.full, { force: true });
  };
  await t.step(
    'save',
    async () => {
      d.crash('vm.fork.save');
      const made =
        ramSrc !== undefined
          ? sealForkFiles(fp).then(() =>
              t.progress('path ram-file: RAM file and device state sealed (no loader)'),
            )
          : makeRamFile(d, srcSpec, tplSpec, forkId, fp, src.diskSizeBytes);
      await made.catch(async (err: unknown) => {
        await dropRam();
        throw err;
      });
    },
    dropRam,
  );

  // ---- start_children ------------------------------------------------------------------------
  const started = await t.step('start_children', async (signal) => {
    d.crash('vm.fork.start_children');
    return Promise.all(children.map((c) => startChild(d, t, c, tplSpec, fp, seeds.get(c.id)!, signal)));
  });
  await rebound;
  return { vms: started, sourcePauseMs, forkId };
}

/** Undo a disk freeze that did not switch the source: the base link and the new overlay go. */
async function undoFreeze(d: ForkDeps, src: VmRow, forkId: string, srcDeps: string[]): Promise<void> {
  const fp = forkPaths(d.stateDir, forkId);
  await rm(nextOverlay(d.stateDir, src.id, forkId), { force: true });
  await rm(fp.disk, { force: true });
  await writeForkDeps(
    vmFiles(d.stateDir, src.id).dir,
    srcDeps.filter((x) => x !== forkId),
  );
}

/** Why a fork takes the full-save path (said in its pause_source step). */
function whyFullSave(spec: VmLaunchSpec): string {
  if (!spec.memory) return 'the source has anonymous RAM (booted before RAM files, or no room on /dev/shm)';
  if (!spec.memory.share) return "the source maps a template's or fork's RAM file copy-on-write";
  return "the source's RAM file was not found among its VMM's open files";
}

/** The file-backed path's save: the copied RAM and the device state, read-only from now on. */
async function sealForkFiles(fp: ForkPaths): Promise<void> {
  await chmod(fp.ram, 0o444);
  await chmod(fp.state, 0o444);
}

/**
 * After a failed fork, or at start-up after a crash in one: the source's guest continues (if
 * stopped: still `pausing`) and the source is `running`, its balloon driver bound again (in the
 * background when `background`: a restarted daemon does not wait for the guest agent); a guest
 * that cannot continue is killed and the source `stopped`. Returns what became of it.
 */
async function continueSource(
  d: Pick<ForkDeps, 'store' | 'log' | 'setState' | 'runtime' | 'hooks'>,
  src: VmRow,
  h: VmmHandle | null,
  balloon: string[],
  why: string,
  background = false,
): Promise<'running' | 'stopped' | 'kept'> {
  const cur = d.store.vms.getById(src.id);
  if (!cur || cur.state !== 'pausing') return 'kept';
  if (h) {
    await h.cancelSave?.();
    const ok = await h.resume().then(
      () => true,
      () => false,
    );
    if (ok) {
      d.setState(src.id, 'running', null);
      const rebind = d.hooks
        .restoreBalloon(src, balloon)
        .catch((err: unknown) =>
          d.log.warn({ vm: src.name, err: message(err) }, 'could not rebind the balloon driver'),
        );
      if (!background) await rebind;
      return 'running';
    }
    // Killed through this handle (a restarted daemon's may not be in the runtime yet).
    d.runtime.expectExit(src.id);
    await h.kill('SIGKILL').catch(() => undefined);
    await h.waitExit().catch(() => undefined);
  }
  d.setState(
    src.id,
    'stopped',
    h ? `${why} and the guest could not be continued` : `${why} (its VMM was gone)`,
  );
  return 'stopped';
}

/**
 * The loader: the source's configuration with the fork's RAM file mapped share=on, waiting for a
 * state; it loads the source's full save (the RAM lands in the file), saves the device state
 * alone (x-ignore-shared), and is killed. Then the RAM file and the state are sealed read-only.
 */
async function makeRamFile(
  d: ForkDeps,
  srcSpec: VmLaunchSpec,
  tplSpec: VmLaunchSpec,
  forkId: string,
  fp: ForkPaths,
  diskBytes: number,
): Promise<void> {
  const port = await reservePort();
  const loaderOverlay = join(fp.dir, 'loader.qcow2');
  let handle: VmmHandle | undefined;
  try {
    // Its own throwaway overlay (QEMU locks an image it writes); the net device as the source's
    // (the device state carries it), behind a user-mode backend that reaches nothing.
    await d.hooks.makeOverlay(fp.disk, loaderOverlay, diskBytes);
    const spec: VmLaunchSpec = {
      ...tplSpec,
      id: `fork-${forkId}`,
      vmDir: fp.dir,
      disks: tplSpec.disks.map((dk, i) => (i === 0 ? { ...dk, path: loaderOverlay } : dk)),
      net: {
        mode: 'user',
        sshHostPort: port,
        restrict: true,
        ...(netMac(srcSpec) ? { mac: netMac(srcSpec)! } : {}),
      },
      serialLog: join(fp.dir, 'loader.log'),
      agentSocket: join(fp.dir, 'agent.sock'),
      qgaSocket: join(fp.dir, 'qga.sock'),
      incoming: 'defer',
    };
    handle = await d.runtime.driver.start(d.runtime.driver.prepare(spec), { logger: d.log });
    await handle.loadState!(fp.full);
    await handle.saveState!(fp.state, { ignoreShared: true });
    await handle.kill('SIGKILL').catch(() => undefined);
    await handle.waitExit().catch(() => undefined);
    handle = undefined;
    // Read-only from now on. Not flushed (a template's files are): a fork's files serve running
    // VMs only (a host crash ends them; a child paused to disk saves its whole RAM), and a flush
    // of the RAM file costs seconds.
    await chmod(fp.ram, 0o444);
    await chmod(fp.state, 0o444);
    await rm(fp.full, { force: true });
  } finally {
    if (handle) {
      await handle.kill('SIGKILL').catch(() => undefined);
      await handle.waitExit().catch(() => undefined);
    }
    releasePort(port);
    await Promise.all(
      [
        'loader.qcow2',
        'loader.log',
        'agent.sock',
        'qga.sock',
        'qmp.sock',
        'qemu.pid',
        'qemu.stderr',
        'handles.json',
      ].map((f) => rm(join(fp.dir, f), { force: true })),
    );
  }
}

function netMac(spec: VmLaunchSpec): string | undefined {
  return spec.net.mode === 'none' ? undefined : spec.net.mac;
}

/** One child: its VMM from the fork's RAM file and state, its identity, its branch, SSH. */
async function startChild(
  d: ForkDeps,
  t: OperationTracker,
  c: VmRow,
  tplSpec: VmLaunchSpec,
  fp: ForkPaths,
  seeded: { hostKey: HostKeyPair; machineId: string },
  signal: AbortSignal,
): Promise<VmRow> {
  const files = vmFiles(d.stateDir, c.id);
  if (c.networkMode === 'bridge') await d.network.attach(c);
  const port = c.networkMode === 'bridge' ? undefined : await reservePort();
  try {
    await markSerial(d.stateDir, c, 'vm.fork (restore)', d.serialMarks);
    const spec = cloneLaunchSpec(tplSpec, {
      id: c.id,
      files,
      // User mode: the child's own egress netdev (its proxy socket, not the source's).
      ...(port !== undefined
        ? { sshHostPort: port, egress: userNetEgress(c, d.stateDir) }
        : { tap: d.network.guest(c).tap }),
    });
    attachEgress(d, c);
    const { handle, loadMs } = await startFromSharedState(
      { driver: d.runtime.driver, log: d.log },
      spec,
      fp.state,
    );
    d.runtime.attach(c.id, handle);
    // A later `vm pause` of the child finds the configuration it runs with here.
    const { incoming: _incoming, ...ran } = spec;
    await writeResumedSpec(files.dir, ran);
    const summary = await d.hooks.reidentify(c, seeded, signal);
    const ws = asGuestPath(c.workspace);
    if (ws) await d.hooks.branch(c, ws, forkBranch(c.name));
    await d.hooks.ready(c, signal);
    t.progress(`${c.name}: state loaded in ${loadMs} ms; ${summary}`);
    return d.setState(d.store.vms.recordBoot(c.id), 'running');
  } finally {
    if (port !== undefined) releasePort(port);
  }
}

function asGuestPath(ws: unknown): string | undefined {
  if (!ws || typeof ws !== 'object') return undefined;
  const p = (ws as { guest_path?: unknown }).guest_path;
  return typeof p === 'string' ? p : undefined;
}

/**
 * Start-up: a source the daemon died forking (its journal is there). Its disk is repaired
 * (switched: the overlay's name points at the new overlay; not: the base link and the new overlay
 * go), its guest continued when its VMM lives (`running`), else it is `stopped`. Its children
 * are `creating` rows, undone by the caller like any interrupted create.
 */
export async function reconcileFork(
  d: Pick<ForkDeps, 'stateDir' | 'store' | 'log' | 'setState' | 'runtime' | 'hooks'>,
  row: VmRow,
  h: VmmHandle | null,
  j: ForkJournal,
): Promise<'running' | 'stopped' | 'kept'> {
  const files = vmFiles(d.stateDir, row.id);
  const fp = forkPaths(d.stateDir, j.forkId);
  const next = nextOverlay(d.stateDir, row.id, j.forkId);
  const nextThere = await stat(next).then(
    () => true,
    () => false,
  );
  if (nextThere) {
    const switched = (await pointsAt(files.overlay, next)) || (h ? await hasOpen(h.pid, next) : false);
    if (switched) await pointOverlayAt(files.overlay, next);
    else {
      await rm(next, { force: true });
      const [a, b] = await Promise.all([
        stat(fp.disk).catch(() => undefined),
        stat(files.overlay).catch(() => undefined),
      ]);
      if (a && b && a.ino === b.ino) await rm(fp.disk, { force: true });
      const deps = await readForkDeps(files.dir);
      await writeForkDeps(
        files.dir,
        deps.filter((x) => x !== j.forkId),
      );
    }
  }
  await rm(join(files.dir, FORKING_JOURNAL), { force: true });
  if (row.state !== 'pausing') {
    // Died in resume_source after the source ran on: its balloon driver may still be unbound.
    if (h && (j.balloon?.length ?? 0) > 0)
      void d.hooks
        .restoreBalloon(row, j.balloon ?? [])
        .catch((err: unknown) =>
          d.log.warn({ vm: row.name, err: message(err) }, 'could not rebind the balloon driver'),
        );
    return 'kept';
  }
  const how = await continueSource(d, row, h, j.balloon ?? [], 'fork interrupted by a daemon restart', true);
  if (how === 'running')
    d.log.warn({ vm: row.name }, 'fork interrupted by a daemon restart: the source runs on');
  return how;
}

/**
 * Remove the fork directories no VM uses any more (none lists it in its forks.json) and none
 * being made now. A child keeps the base of its disk (and the RAM file a resume maps) alive
 * after its source is deleted; the last user's delete removes them.
 */
export async function sweepForks(stateDir: string, store: Store, log: Logger): Promise<string[]> {
  const root = join(stateDir, 'forks');
  const names = await readdir(root).catch(() => [] as string[]);
  if (names.length === 0) return [];
  const used = new Set<string>();
  for (const vm of store.vms.list())
    for (const id of await readForkDeps(vmFiles(stateDir, vm.id).dir)) used.add(id);
  const removed: string[] = [];
  for (const n of names) {
    if (inFlight.has(n)) continue;
    if (used.has(n)) {
      // Used (a disk backs on its base) but never finished (no sealed state: a fork interrupted
      // at its save): all but the base serves nobody: its RAM file, the source's full save, the
      // loader's overlay, log, sockets and pidfile.
      const fp = forkPaths(stateDir, n);
      if (
        !(await stat(fp.state).then(
          (st) => (st.mode & 0o222) === 0,
          () => false,
        ))
      ) {
        for (const f of await readdir(fp.dir).catch(() => [] as string[]))
          if (f !== basename(fp.disk)) await rm(join(fp.dir, f), { recursive: true, force: true });
      }
      continue;
    }
    await rm(join(root, n), { recursive: true, force: true });
    removed.push(n);
    log.info({ fork: n }, 'fork files nobody uses removed');
  }
  return removed;
}
