// The create pipeline: named steps, each with an undo, durations recorded on the operation.
// A failure or a cancel undoes every completed step in reverse, so nothing is left behind.
import { mkdir, rm } from 'node:fs/promises';
import { buildSeedImage, randomMachineId } from '../image/seed.ts';
import type { OperationTracker } from '../ops/operations.ts';
import type { ImageRow, KernelRow, NewVm, Store, VmRow, VmState } from '../store/index.ts';
import { createOverlay } from './disk.ts';
import { vmFiles } from './layout.ts';
import {
  attachEgress,
  BootStalledError,
  bootVmm,
  formatReadyTimes,
  killVmm,
  markSerial,
  waitReady,
  type MachineDeps,
} from './machine.ts';
import { generateHostKey, hostKeyAlias, pinHostKey, unpinHostKey, type HostKeyPair } from './ssh.ts';
import { QgaClient } from '../engine/qga.ts';
import { applyGuestEgress, type GuestEgressSetup } from '../egress/guest.ts';
import {
  newReadyToken,
  readyLine,
  ReidentifyError,
  reidentifyGuest,
  watchFileFor,
  type ReidentifyWaiter,
} from './reidentify.ts';
import { formatRestoreTimes, startClone, type WarmSpec, type WarmTemplate } from './warm.ts';
import { userNetEgress } from '../egress/types.ts';
import { releasePort, reservePort } from './ports.ts';

export interface CreateDeps extends MachineDeps {
  store: Store;
  installPubKey: () => Promise<string>;
  resolveImage: (
    name: string | undefined,
    opts: { signal: AbortSignal; onProgress: (d: string) => void },
  ) => Promise<{ image: ImageRow; kernel: KernelRow }>;
  /** Warm templates; absent: every VM boots cold. */
  warm?: WarmSource;
  /** What the guest needs for egress (proxy variables, secrets, CA); undefined: nothing. */
  guestEgress?: (vm: VmRow) => Promise<GuestEgressSetup | undefined>;
  /** The lifecycle owner's state writer (src/vm/lifecycle.ts): the only way to change a state. */
  setState: (vm: VmRow, to: VmState, reason?: string | null) => VmRow;
}

export interface WarmSource {
  /** The matching finished template, or why there is none (said in the create's progress). */
  lookup(
    image: ImageRow,
    kernel: KernelRow,
    spec: WarmSpec,
  ): Promise<{ template: WarmTemplate } | { template?: undefined; reason: string }>;
  /** Told after a cold create succeeded (it may warm this spec in the background). */
  coldCreated?(image: ImageRow, kernel: KernelRow, spec: WarmSpec): void;
  /** How long re-identifying a clone may take. */
  reidentifyTimeoutMs?: number;
  /** Told after a clone was deleted (its template may now be removable). */
  vmDeleted?(vm: VmRow): void;
}

export interface CreateRequest {
  /** The VM to record once its image is known (the name is reserved by the caller until then). */
  draft: Omit<NewVm, 'imageId'> & { id: string };
  imageName: string | undefined;
  start: boolean;
  /** Boot cold even when a warm template matches. */
  cold?: boolean;
  /** Called once the VM row exists. */
  onRecorded?: (vm: VmRow) => void;
}

export async function runCreate(d: CreateDeps, t: OperationTracker, req: CreateRequest): Promise<VmRow> {
  const { image, kernel } = await t.step('resolve_image', (signal) =>
    d.resolveImage(req.imageName, { signal, onProgress: (m) => t.progress(m) }),
  );
  const warmSpec: WarmSpec = {
    vcpus: req.draft.vcpus,
    memoryMib: req.draft.memoryMib,
    diskSizeBytes: req.draft.diskSizeBytes,
    networkMode: req.draft.networkMode === 'bridge' ? 'bridge' : 'user',
  };
  let template: WarmTemplate | undefined;
  if (req.start && d.warm) {
    if (req.cold) {
      t.stepSkipped('warm', 'booting cold (--cold)');
    } else {
      const t0 = performance.now();
      const found = await d.warm.lookup(image, kernel, warmSpec);
      if (found.template) {
        template = found.template;
        t.stepDone('warm', {
          durationMs: performance.now() - t0,
          detail: `restoring from warm template ${found.template.manifest.keyHash.slice(0, 16)}`,
        });
      } else {
        t.stepSkipped('warm', `booting cold: ${found.reason}`);
      }
    }
  }
  let vm = await t.step(
    'record',
    async () =>
      // A bridged VM's address is allocated in the same transaction that records it.
      d.store.transaction(() =>
        d.store.vms.insert({
          ...req.draft,
          imageId: image.id,
          state: 'creating',
          guestIp: req.draft.networkMode === 'bridge' ? d.network.allocateGuestIp() : null,
          warmTemplate: template ? template.manifest.keyHash.slice(0, 16) : null,
        }),
      ),
    async (row) => {
      d.store.vms.delete(row.id);
      // The events' cached op id of this name goes with the row: a later create of the same name
      // must not log its denials under this failed create's op id.
      d.egress?.events.forget(row.name);
    },
  );
  req.onRecorded?.(vm);

  if (vm.networkMode === 'bridge') {
    // Bridge, the VM's tap (owned by this daemon's uid) and, with --nat, its NAT rules.
    const net = d.network;
    await t.step(
      'network',
      () => net.attach(vm),
      () => net.detach(vm),
    );
  }

  const afterNetwork = t.undoMark();
  if (template && req.start) {
    try {
      return await warmSteps(d, t, vm, template);
    } catch (err) {
      if (t.signal.aborted) throw err;
      const why = err instanceof Error ? err.message : String(err);
      d.log.warn({ vm: vm.name, err: why }, 'warm start failed; undoing it and booting cold');
      await t.rollbackTo(afterNetwork);
      vm = d.store.vms.update(vm.id, { warmTemplate: null });
      t.stepDone('warm_fallback', { durationMs: 0, detail: `warm start failed (${why}); booting cold` });
    }
  }
  vm = await coldSteps(d, t, vm, image, kernel, req.start);
  if (req.start && !req.cold) d.warm?.coldCreated?.(image, kernel, warmSpec);
  return vm;
}

/** The per-VM seed: SSH keys, host key (pinned before boot), hostname, machine-id. */
export async function seedStep(
  d: CreateDeps,
  t: OperationTracker,
  vm: VmRow,
): Promise<{ vm: VmRow; hostKey: HostKeyPair; machineId: string }> {
  const files = vmFiles(d.stateDir, vm.id);
  const alias = hostKeyAlias(vm.name);
  const machineId = randomMachineId();
  let hostKey: HostKeyPair | undefined;
  await t.step(
    'seed',
    async () => {
      hostKey = await generateHostKey(files.dir);
      await buildSeedImage({
        path: files.seed,
        authorizedKeys: [await d.installPubKey()],
        hostKeyPrivate: hostKey.privateKey,
        hostKeyPublic: hostKey.publicKey,
        hostname: vm.name,
        machineId,
        nameservers: vm.networkMode === 'bridge' ? d.network.guest(vm).nameservers : ['10.0.2.3'],
      });
      await pinHostKey(d.ssh, alias, hostKey.publicKey);
    },
    () => unpinHostKey(d.ssh, alias),
  );
  if (!hostKey) throw new Error('seed step produced no host key');
  return { vm: d.store.vms.update(vm.id, { sshHostKey: hostKey.publicKey }), hostKey, machineId };
}

/** The VM directory and its copy-on-write disk over `base`. */
async function diskStep(
  d: CreateDeps,
  t: OperationTracker,
  vm: VmRow,
  base: { path: string; format: 'qcow2' | 'raw' },
): Promise<void> {
  const files = vmFiles(d.stateDir, vm.id);
  await t.step(
    'prepare_disk',
    async () => {
      await mkdir(files.dir, { recursive: true, mode: 0o700 });
      try {
        await createOverlay(base.path, files.overlay, vm.diskSizeBytes, base.format);
      } catch (err) {
        // A failed step registers no undo: remove the directory it made here.
        await rm(files.dir, { recursive: true, force: true });
        throw err;
      }
    },
    () => rm(files.dir, { recursive: true, force: true }),
  );
}

export async function readySteps(d: CreateDeps, t: OperationTracker, vm: VmRow): Promise<VmRow> {
  await waitReadyStep(d, t, vm);
  return finishReady(d, t, vm);
}

/**
 * The `wait_ready` step. `restoredSince` (a restored clone: its sshd was already up, only the
 * first ssh counts) names what the ssh time is counted from; `stop` ends the wait early.
 */
async function waitReadyStep(
  d: CreateDeps,
  t: OperationTracker,
  vm: VmRow,
  restoredSince?: string,
  stop?: AbortSignal,
): Promise<void> {
  await t.step('wait_ready', async (opSignal) => {
    const signal = stop ? AbortSignal.any([opSignal, stop]) : opSignal;
    const restored = restoredSince !== undefined;
    const r = await waitReady(d, vm, signal, (m) => t.progress(m), { restored });
    // The closing detail keeps when each guest stage was reached (`banger vm create`, npm run bench);
    // wait_ready is the last step begun (a clone's reidentify began before it).
    t.progress(
      restored
        ? `ssh answered ${(r.times.sshMs / 1000).toFixed(2)} s ${restoredSince}`
        : formatReadyTimes(r.times),
    );
    return r;
  });
}

/** After the first ssh: the guest's egress setup, then `running`. */
async function finishReady(d: CreateDeps, t: OperationTracker, vm: VmRow): Promise<VmRow> {
  const egress = await d.guestEgress?.(vm);
  if (egress) {
    // Proxy variables, secret placeholders and banger's CA, through the guest agent.
    await t.step('egress_guest', async (signal) => {
      const qga = await QgaClient.connect(vmFiles(d.stateDir, vm.id).qgaSocket, {
        timeoutMs: 30_000,
        signal,
      });
      try {
        t.progress(await applyGuestEgress(qga, egress, 30_000));
      } finally {
        qga.close();
      }
    });
  }
  // The VM stays `creating` until it answers as itself: a crash before this line is undone.
  return d.setState(d.store.vms.recordBoot(vm.id), 'running');
}

async function coldSteps(
  d: CreateDeps,
  t: OperationTracker,
  vm0: VmRow,
  image: ImageRow,
  kernel: KernelRow,
  start: boolean,
): Promise<VmRow> {
  await diskStep(d, t, vm0, {
    path: image.rootfsPath,
    format: image.rootfsFormat === 'qcow2' ? 'qcow2' : 'raw',
  });
  const { vm } = await seedStep(d, t, vm0);
  if (!start) return d.setState(vm, 'stopped');
  for (let attempt = 1; ; attempt++) {
    const beforeBoot = t.undoMark();
    await t.step(
      'boot',
      () => bootVmm(d, vm, kernel, 'vm.create'),
      () => killVmm(d, vm.id),
    );
    try {
      return await readySteps(d, t, vm);
    } catch (err) {
      // A boot stuck with a silent console is retried once, visibly.
      if (!(err instanceof BootStalledError) || attempt > 1 || t.signal.aborted) throw err;
      d.log.warn({ vm: vm.name, err: err.message }, 'boot stalled; killing the VMM and booting again');
      await t.rollbackTo(beforeBoot);
      t.stepDone('boot_retry', { durationMs: 0, detail: `${err.message}; booting again` });
    }
  }
}

/**
 * A clone of a warm template: its overlay on the template's disk, its own seed (used by later
 * cold starts), the template's VMM configuration restored from the saved state, then a new
 * identity through the guest agent before anything waits for SSH.
 */
async function warmSteps(d: CreateDeps, t: OperationTracker, vm0: VmRow, tpl: WarmTemplate): Promise<VmRow> {
  const files = vmFiles(d.stateDir, vm0.id);
  // The overlay and the seed (host key, seed image, pin) are independent: made side by side, as
  // both wait on a process (qemu-img; ssh-keygen, mkfs.ext4). Both settle before any failure
  // goes on, so a rollback never races a step still writing into the VM's directory.
  await mkdir(files.dir, { recursive: true, mode: 0o700 });
  t.registerUndo(() => rm(files.dir, { recursive: true, force: true }));
  const [disk, seed] = await Promise.allSettled([
    diskStep(d, t, vm0, { path: tpl.disk, format: 'qcow2' }),
    seedStep(d, t, vm0),
  ]);
  if (disk.status === 'rejected') throw disk.reason;
  if (seed.status === 'rejected') throw seed.reason;
  const seeded = seed.value;
  const vm = seeded.vm;
  await t.step(
    'restore',
    async () => {
      await markSerial(d.stateDir, vm, 'vm.create (warm restore)', d.serialMarks);
      const port = vm.networkMode === 'bridge' ? undefined : await reservePort();
      try {
        const target = {
          id: vm.id,
          files,
          ...(port !== undefined
            ? { sshHostPort: port, egress: userNetEgress(vm, d.stateDir) }
            : { tap: d.network.guest(vm).tap }),
        };
        attachEgress(d, vm);
        const handle = await startClone({ driver: d.runtime.driver, log: d.log }, tpl, target, (x) =>
          t.progress(formatRestoreTimes(x)),
        );
        d.runtime.attach(vm.id, handle);
      } finally {
        if (port !== undefined) releasePort(port);
      }
    },
    () => killVmm(d, vm.id),
  );
  const waiter = tpl.manifest.reidentifyWaiter;
  // The first ssh starts once the clone's waiter says a login may (its host key, address and RNG
  // are in place: it writes a line on the console) and runs beside the rest of the
  // re-identification; without that line, once it exited. Both must succeed; a failed
  // re-identification stops the ssh before the create goes on to undo.
  await runOverlapped(
    (go) =>
      t.step('reidentify', async (signal) => {
        t.stepProgress('reidentify', await reidentifyClone(d, vm, seeded, signal, waiter, go));
      }),
    (stop, started) =>
      waitReadyStep(
        d,
        t,
        vm,
        started === 'early' ? 'after the ready line of re-identification' : 'after re-identification',
        stop,
      ),
  );
  return finishReady(d, t, vm);
}

/**
 * Give a restored guest (a warm clone, a fork) its own identity through its guest agent:
 * clock, entropy, machine-id, hostname, host key and, bridged, MAC and address. Returns the
 * summary of where the time went.
 */
export async function reidentifyClone(
  d: Pick<CreateDeps, 'stateDir' | 'network' | 'warm' | 'testFailStep'>,
  vm: VmRow,
  seeded: { hostKey: HostKeyPair; machineId: string },
  signal: AbortSignal,
  /** A warm template's waiting script (a fork's children have none). */
  waiter?: ReidentifyWaiter,
  /** With a waiter: told once it wrote its ready line (an SSH login may start). */
  onReady?: () => void,
): Promise<string> {
  const files = vmFiles(d.stateDir, vm.id);
  const net = vm.networkMode === 'bridge' ? d.network.guest(vm) : undefined;
  const timeoutMs = d.warm?.reidentifyTimeoutMs ?? 30_000;
  const qga = await QgaClient.connect(files.qgaSocket, { timeoutMs, signal });
  // The waiter's ready line comes on the serial console, which QEMU appends to the serial log.
  const token = waiter && onReady ? newReadyToken() : undefined;
  const watch = token ? watchFileFor(files.serialLog, readyLine(token)) : undefined;
  let readySeen = false;
  void watch?.seen.then(() => {
    readySeen = true;
    onReady?.();
  });
  try {
    if (d.testFailStep === 'reidentify') {
      // TEST-ONLY: a re-identification that fails in the guest, through the real agent.
      const r = await qga.exec(
        '/bin/sh',
        ['-c', 'echo "injected test fault (BANGER_TEST_FAIL_STEP)" >&2; exit 3'],
        {
          timeoutMs,
        },
      );
      throw new ReidentifyError(r.exitcode, r.stderr);
    }
    const r = await reidentifyGuest(
      qga,
      {
        machineId: seeded.machineId,
        hostname: vm.name,
        hostKeyPrivate: seeded.hostKey.privateKey,
        hostKeyPublic: seeded.hostKey.publicKey,
        ...(net
          ? {
              net: {
                mac: vm.mac,
                address: `${net.ip}/${net.prefix}`,
                gateway: net.gateway,
                nameservers: net.nameservers,
              },
            }
          : {}),
        ...(token ? { readyToken: token } : {}),
      },
      // Once the ssh runs, the exit matters less than the guest's CPU: fewer polls.
      { timeoutMs, ...(waiter ? { waiter } : {}), pollMs: () => (readySeen ? 50 : 10) },
    );
    return r.summary;
  } finally {
    watch?.stop();
    qga.close();
  }
}

/**
 * Run `first` and, once it says so (its `go` callback) or once it succeeded, `second`, beside the
 * rest of `first`. Both must succeed: when `first` fails, `second` (if started) is told to stop
 * through its signal and awaited, and `first`'s error is thrown; when only `second` fails, `first`
 * is still awaited before its error is thrown, so nothing runs on after this settles. `second`
 * hears how it started: 'early' (go was called) or 'after' `first` succeeded.
 */
export async function runOverlapped(
  first: (go: () => void) => Promise<unknown>,
  second: (stop: AbortSignal, started: 'early' | 'after') => Promise<unknown>,
): Promise<void> {
  let go!: (how: 'early' | 'after' | 'never') => void;
  const start = new Promise<'early' | 'after' | 'never'>((resolve) => (go = resolve));
  const stop = new AbortController();
  const firstDone = first(() => go('early')).then(
    () => go('after'),
    (err: unknown) => {
      stop.abort();
      go('never');
      throw err;
    },
  );
  const secondDone = start.then((how) =>
    how === 'never' || stop.signal.aborted ? undefined : second(stop.signal, how),
  );
  const [a, b] = await Promise.allSettled([firstDone, secondDone]);
  if (a.status === 'rejected') throw a.reason;
  if (b.status === 'rejected') throw b.reason;
}
