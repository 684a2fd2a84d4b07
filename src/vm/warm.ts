// Warm templates: boot a VM once with its RAM in a file, save its device state (QMP `stop` +
// migrate to a file with x-ignore-shared: the RAM stays in its file) with the disk overlay of that
// moment, and start later VMs of the same spec from it: a clone gets its own qcow2 overlay on the
// template's overlay and a QEMU started with the template's exact device configuration, mapping
// the template's RAM file copy-on-write (share=off: reads share the template's pages, writes stay
// private), plus `-incoming defer`; then x-ignore-shared, `migrate-incoming` and `cont`. The guest
// agent gives it its own identity before anyone can reach it (src/vm/reidentify.ts).
//
// A template is addressed by the hash of its key (image and kernel files, vCPUs, memory, disk
// size, network mode, engine and accelerator): any change to any part is a different key, so a
// stale template is simply never found, and is removed once no VM's disk backs on it. Templates
// live beside their image: <image dir>/warm/<hash16>/ holding disk.qcow2 (read-only base), ram
// (the guest's RAM, read-only once saved: clones map it), seed.ext4, state (device state only),
// serial.log and template.json, written last: a directory without it is an unfinished build. A
// running clone maps the RAM file, so a template is never removed while a VM's row names it.
import { createHash } from 'node:crypto';
import { accessSync, chmodSync, constants as fsc } from 'node:fs';
import { chmod, mkdir, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Accel, GuestForward, VmLaunchSpec, VmmDriver, VmmHandle } from '../engine/index.ts';
import { EngineError } from '../engine/index.ts';
import { INCOMING_DEFER } from '../engine/migration.ts';
import { QgaClient } from '../engine/qga.ts';
import { canonicalJson } from '../image/recipe.ts';
import { buildSeedImage, randomMachineId } from '../image/seed.ts';
import type { Logger } from '../log/logger.ts';
import type { ImageRow, KernelRow } from '../store/index.ts';
import { waitForAgentReady } from './agent.ts';
import { createOverlay } from './disk.ts';
import type { VmFiles } from './layout.ts';
import { guestCmdline } from './machine.ts';
import { releasePort, reservePort } from './ports.ts';
import { startReidentifyWaiter, waiterWaits, type ReidentifyWaiter } from './reidentify.ts';
import { generateHostKey } from './ssh.ts';

/** Bump when anything about how templates are made changes: older templates stop matching. */
// 2: RAM in a file shared copy-on-write with the clones; 3: TCG guests boot with ARAT (tickless
// idle), which a clone only gets from a template booted with it; 4: saved with banger-reidentify
// waiting for its input (reidentifyWaiter); 5: that waiter holds the serial console open and
// takes a ready_token (older waiters reject the key).
export const WARM_FORMAT = 5;
/** The hostname a template boots with (each clone gets its own before it is reachable). */
export const TEMPLATE_HOSTNAME = 'banger-warm';
export const TEMPLATE_MANIFEST = 'template.json';

export type WarmNetworkMode = 'user' | 'bridge';

/** What a template is for: the parts of a VM spec its saved state fixes. */
export interface WarmSpec {
  vcpus: number;
  memoryMib: number;
  diskSizeBytes: number;
  networkMode: WarmNetworkMode;
}

interface FileId {
  size: number;
  mtimeMs: number;
  ino: number;
}

export interface WarmKey extends WarmSpec {
  format: number;
  image: { id: string; name: string; recipeHash: string | null; rootfs: FileId };
  kernel: { id: string; kernel: FileId; initrd: FileId | null };
  engine: { driver: 'qemu'; version: string; accel: Accel };
}

export interface TemplateManifest {
  format: number;
  keyHash: string;
  key: WarmKey;
  /** The launch spec the template ran with (incoming unset); clones copy it but for per-VM paths. */
  spec: VmLaunchSpec;
  createdAt: string;
  /** Template VMM start → guest ready (agent), ms. */
  bootMs: number;
  /** QMP stop + migrate to the state file, ms. */
  saveMs: number;
  /** The device state file's size (the RAM is not in it). */
  stateBytes: number;
  /** The guest RAM file clones map (spec.memory.backendFile). */
  ramFile: string;
  /** The space the RAM file takes on disk (it is sparse: pages the guest never touched are holes). */
  ramBytes: number;
  /**
   * banger-reidentify, saved waiting for its input (src/vm/reidentify.ts): each clone writes it
   * the clone's identity. Absent when it could not be started: clones then have the agent run it.
   */
  reidentifyWaiter?: ReidentifyWaiter;
}

export interface WarmTemplate {
  dir: string;
  manifest: TemplateManifest;
  disk: string;
  state: string;
  ram: string;
}

/** The hash of a key: sha256 over its canonical JSON (sorted keys). */
export function warmKeyHash(key: WarmKey): string {
  return createHash('sha256').update(canonicalJson(key)).digest('hex');
}

async function fileId(path: string): Promise<FileId> {
  const s = await stat(path);
  return { size: s.size, mtimeMs: Math.round(s.mtimeMs), ino: s.ino };
}

export async function warmKey(
  image: ImageRow,
  kernel: KernelRow,
  spec: WarmSpec,
  engine: { version: string; accel: Accel },
): Promise<WarmKey> {
  return {
    format: WARM_FORMAT,
    image: {
      id: image.id,
      name: image.name,
      recipeHash: image.recipeHash,
      rootfs: await fileId(image.rootfsPath),
    },
    kernel: {
      id: kernel.id,
      kernel: await fileId(kernel.kernelPath),
      initrd: kernel.initrdPath ? await fileId(kernel.initrdPath) : null,
    },
    vcpus: spec.vcpus,
    memoryMib: spec.memoryMib,
    diskSizeBytes: spec.diskSizeBytes,
    networkMode: spec.networkMode,
    engine: { driver: 'qemu', version: engine.version, accel: engine.accel },
  };
}

/** Where an image's templates live. */
export function warmRoot(image: Pick<ImageRow, 'rootfsPath'>): string {
  return join(dirname(image.rootfsPath), 'warm');
}

export function templateDir(image: Pick<ImageRow, 'rootfsPath'>, keyHash: string): string {
  return join(warmRoot(image), keyHash.slice(0, 16));
}

/** A template's guest RAM file (read-only to everyone once the template is finished). */
export function templateRamFile(dir: string): string {
  return templatePaths(dir).ram;
}

function templatePaths(dir: string): {
  disk: string;
  seed: string;
  state: string;
  ram: string;
  manifest: string;
} {
  return {
    disk: join(dir, 'disk.qcow2'),
    seed: join(dir, 'seed.ext4'),
    state: join(dir, 'state'),
    ram: join(dir, 'ram'),
    manifest: join(dir, TEMPLATE_MANIFEST),
  };
}

/** The template for `keyHash` if a finished one is on disk. */
export async function findTemplate(
  image: Pick<ImageRow, 'rootfsPath'>,
  keyHash: string,
): Promise<WarmTemplate | undefined> {
  const dir = templateDir(image, keyHash);
  const p = templatePaths(dir);
  let manifest: TemplateManifest;
  try {
    manifest = JSON.parse(await readFile(p.manifest, 'utf8')) as TemplateManifest;
  } catch {
    return undefined;
  }
  if (manifest.keyHash !== keyHash || manifest.format !== WARM_FORMAT) return undefined;
  return { dir, manifest, disk: p.disk, state: p.state, ram: p.ram };
}

/** Every template directory of an image, finished or not. */
export async function listTemplates(
  image: Pick<ImageRow, 'rootfsPath'>,
): Promise<{ dir: string; hash16: string; manifest?: TemplateManifest }[]> {
  const root = warmRoot(image);
  const names = await readdir(root).catch(() => [] as string[]);
  const out: { dir: string; hash16: string; manifest?: TemplateManifest }[] = [];
  for (const name of names.sort()) {
    if (!/^[0-9a-f]{16}$/.test(name)) continue;
    const dir = join(root, name);
    const manifest = await readFile(join(dir, TEMPLATE_MANIFEST), 'utf8').then(
      (t) => JSON.parse(t) as TemplateManifest,
      () => undefined,
    );
    out.push(manifest ? { dir, hash16: name, manifest } : { dir, hash16: name });
  }
  return out;
}

/** Per-VM parts of a clone's launch spec. */
export interface CloneTarget {
  id: string;
  files: VmFiles;
  /** User networking: the host port forwarded to the guest's port 22. */
  sshHostPort?: number;
  /** Bridge networking: the clone's own tap. */
  tap?: string;
  /**
   * User networking: the clone's own egress netdev options (src/egress/types.ts userNetEgress),
   * replacing the template's; absent keeps the template's (a fork's source's: fails closed).
   */
  egress?: { restrict?: true; guestfwd?: GuestForward };
}

/**
 * A clone's launch spec: the template's, with only per-VM paths, the forwarded port or tap, the
 * RAM file mapped share=off instead of share=on, and `-incoming defer` changed. Everything QEMU
 * checks on restore (machine, devices and their order, RAM, vCPUs, kernel command line, MAC) is
 * the template's, so both argvs come from the same builder and differ only in those places
 * (test/unit/vm-warm.test.ts checks it).
 */
export function cloneLaunchSpec(tpl: VmLaunchSpec, t: CloneTarget): VmLaunchSpec {
  const [root, seed, ...rest] = tpl.disks;
  if (!root || !seed || rest.length > 0)
    throw new EngineError('invalid_spec', 'a template has exactly two disks (root overlay, seed)');
  if (!tpl.memory?.share)
    throw new EngineError('invalid_spec', 'a template keeps its RAM in a shared file (spec.memory)');
  let net: VmLaunchSpec['net'];
  if (tpl.net.mode === 'user') {
    if (t.sshHostPort === undefined)
      throw new EngineError('invalid_spec', 'a user-network clone needs a port');
    if (t.egress !== undefined) {
      // restrict/guestfwd are netdev options outside the saved state: a clone may differ.
      const { restrict: _r, guestfwd: _g, ...base } = tpl.net;
      net = { ...base, sshHostPort: t.sshHostPort, ...t.egress };
    } else net = { ...tpl.net, sshHostPort: t.sshHostPort };
  } else if (tpl.net.mode === 'tap') {
    if (t.tap === undefined) throw new EngineError('invalid_spec', 'a bridged clone needs its tap');
    net = { ...tpl.net, tap: t.tap };
  } else {
    net = tpl.net;
  }
  return {
    ...tpl,
    id: t.id,
    vmDir: t.files.dir,
    disks: [
      { ...root, path: t.files.overlay },
      { ...seed, path: t.files.seed },
    ],
    net,
    serialLog: t.files.serialLog,
    agentSocket: t.files.agentSocket,
    qgaSocket: t.files.qgaSocket,
    memory: { ...tpl.memory, share: false },
    incoming: INCOMING_DEFER,
  };
}

export interface WarmDeps {
  driver: VmmDriver;
  log: Logger;
  accel: () => Promise<Accel>;
  /** The engine's version string (QEMU's `-version` first line). */
  engineVersion: () => Promise<string>;
  installPubKey: () => Promise<string>;
  /** How long the template's boot may take. */
  readyTimeoutMs: number;
  /** The template's NIC in bridge mode (a tap on banger's bridge, no address of its own). */
  bridgeTap?: (templateId: string) => Promise<{ tap: string; release: () => Promise<void> }>;
}

export interface BuildTemplateOptions {
  signal?: AbortSignal;
  /** Each stage as it begins (prepare, boot, settle, save), and details within it. */
  onProgress?: (stage: TemplateStage, detail: string) => void;
  /** Rebuild even if a matching template exists. */
  force?: boolean;
}

export type TemplateStage = 'wait' | 'prepare' | 'boot' | 'settle' | 'save';

const building = new Map<string, Promise<WarmTemplate>>();

/** Build (or return the existing) template for this image, kernel and spec. */
export async function buildTemplate(
  d: WarmDeps,
  image: ImageRow,
  kernel: KernelRow,
  spec: WarmSpec,
  opts: BuildTemplateOptions = {},
): Promise<WarmTemplate> {
  const key = await warmKey(image, kernel, spec, {
    version: await d.engineVersion(),
    accel: await d.accel(),
  });
  const hash = warmKeyHash(key);
  const running = building.get(hash);
  if (running) {
    opts.onProgress?.('wait', 'a build of this template is already running; waiting for it');
    return running;
  }
  if (!opts.force) {
    const found = await findTemplate(image, hash);
    if (found) return found;
  }
  const p = buildFresh(d, image, kernel, key, hash, opts).finally(() => building.delete(hash));
  building.set(hash, p);
  return p;
}

async function buildFresh(
  d: WarmDeps,
  image: ImageRow,
  kernel: KernelRow,
  key: WarmKey,
  hash: string,
  opts: BuildTemplateOptions,
): Promise<WarmTemplate> {
  const progress = opts.onProgress ?? ((): void => undefined);
  const dir = templateDir(image, hash);
  const p = templatePaths(dir);
  const id = `warm-${hash.slice(0, 16)}`;
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let handle: VmmHandle | undefined;
  let port: number | undefined;
  let tap: { tap: string; release: () => Promise<void> } | undefined;
  try {
    progress('prepare', 'the template disk and seed');
    await createOverlay(
      image.rootfsPath,
      p.disk,
      key.diskSizeBytes,
      image.rootfsFormat === 'qcow2' ? 'qcow2' : 'raw',
    );
    // No per-VM secrets in a template: a throwaway host key (every clone gets its own), the
    // daemon's public key (the same for every VM), a random machine-id (replaced per clone).
    const hostKey = await generateHostKey(dir);
    await buildSeedImage({
      path: p.seed,
      authorizedKeys: [await d.installPubKey()],
      hostKeyPrivate: hostKey.privateKey,
      hostKeyPublic: hostKey.publicKey,
      hostname: TEMPLATE_HOSTNAME,
      machineId: randomMachineId(),
      // Bridged templates get their nameserver from the clone's re-identification.
      nameservers: key.networkMode === 'user' ? ['10.0.2.3'] : [],
    });
    let net: VmLaunchSpec['net'];
    const mac = templateMac(hash);
    if (key.networkMode === 'user') {
      port = await reservePort();
      net = { mode: 'user', sshHostPort: port, mac };
    } else {
      if (!d.bridgeTap) throw new EngineError('unsupported', 'bridge templates need the root helper');
      tap = await d.bridgeTap(id);
      net = { mode: 'tap', tap: tap.tap, mac };
    }
    const spec: VmLaunchSpec = {
      id,
      vmDir: dir,
      kernel: kernel.kernelPath,
      cmdline: guestCmdline({ name: TEMPLATE_HOSTNAME, networkMode: key.networkMode }),
      vcpus: key.vcpus,
      memoryMiB: key.memoryMib,
      disks: [
        { path: p.disk, format: 'qcow2' },
        { path: p.seed, format: 'raw', readOnly: true },
      ],
      net,
      serialLog: join(dir, 'serial.log'),
      agentSocket: join(dir, 'agent.sock'),
      qgaSocket: join(dir, 'qga.sock'),
      accel: key.engine.accel,
      // Guest RAM in the template's directory, written through while it runs; clones map it.
      memory: { backendFile: p.ram, share: true },
    };
    if (kernel.initrdPath) spec.initrd = kernel.initrdPath;
    // Pin the TSC rate the command line carries, so every clone's argv is this one's.
    const plan = d.driver.prepare(spec);
    const tsc = /\btsc_early_khz=(\d+)/.exec(plan.driver === 'qemu' ? plan.cmdline : '');
    if (tsc?.[1]) spec.tscKhz = Number(tsc[1]);

    progress('boot', 'the template VM');
    const t0 = performance.now();
    handle = await d.driver.start(d.driver.prepare(spec), { logger: d.log });
    let exited = false;
    void handle.waitExit().then(
      () => (exited = true),
      () => (exited = true),
    );
    const ready = await waitForAgentReady(spec.agentSocket!, {
      timeoutMs: d.readyTimeoutMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
      alive: () => !exited,
      onLine: (l) => {
        if (l === 'banger-userspace') progress('boot', 'template userspace is up');
      },
    });
    if (opts.signal?.aborted) throw new EngineError('timeout', 'template build canceled');
    if (exited)
      throw new EngineError(
        'start_failed',
        `the template VM exited during boot; its console: ${spec.serialLog}`,
      );
    if (!ready.ready) throw new EngineError('timeout', 'the template VM did not become ready');
    progress(
      'settle',
      'waiting for the template boot to finish (systemctl is-system-running --wait), then sync',
    );
    const qga = await QgaClient.connect(spec.qgaSocket!, { timeoutMs: 30_000 });
    let saved: { durationMs: number };
    let bootMs: number;
    let waiter: ReidentifyWaiter | undefined;
    try {
      await qga.sync(30_000);
      // Let every boot job finish here, once, rather than in each clone; then flush.
      await qga.exec('/bin/systemctl', ['is-system-running', '--wait'], { timeoutMs: 60_000 });
      await qga.exec('/bin/sync', [], { timeoutMs: 30_000 });
      bootMs = Math.round(performance.now() - t0);
      // Without a waiter the template still works: its clones have the agent run the script.
      waiter = await startReidentifyWaiter(qga, { timeoutMs: 30_000 }).catch((err: unknown) => {
        d.log.warn({ template: hash.slice(0, 16), err }, 'no waiting banger-reidentify in the template');
        return undefined;
      });

      progress('save', 'QMP stop, then migrate the device state to the state file (RAM stays in its file)');
      if (!handle.saveState) throw new EngineError('unsupported', 'warm templates need QEMU (QMP)');
      // Saved with the agent's port still connected: the guest agent is asleep in its read, and
      // stays so in every clone whose port is connected when its state loads (the VMM's handle
      // connects it at start: QgaHold), so a clone's first agent call is answered at once. Closed
      // before the save, the agent would read EOF and sleep 100 ms in each clone first (qemu-ga's
      // poll while no host is connected).
      // The waiter once more, right before the stop: saved dead, every clone would find it gone.
      if (waiter && !(await waiterWaits(qga, waiter, 5_000).catch(() => false))) {
        d.log.warn(
          { template: hash.slice(0, 16), pid: waiter.pid },
          'the waiting banger-reidentify exited before the save; clones have the agent run the script',
        );
        waiter = undefined;
      }
      saved = await handle.saveState(p.state, { ignoreShared: true });
    } finally {
      qga.close();
    }
    // Stopped and saved: nothing writes the guest's RAM any more; the VMM goes.
    await handle.kill('SIGKILL').catch(() => undefined);
    await handle.waitExit().catch(() => undefined);
    handle = undefined;
    await sealTemplateFiles([p.disk, p.ram, p.state]);
    await Promise.all(
      ['agent.sock', 'qga.sock', 'qmp.sock', 'qemu.pid', 'handles.json'].map((f) =>
        rm(join(dir, f), { force: true }),
      ),
    );
    const stateBytes = (await stat(p.state)).size;
    const ramBytes = (await stat(p.ram)).blocks * 512;
    const manifest: TemplateManifest = {
      format: WARM_FORMAT,
      keyHash: hash,
      key,
      spec,
      createdAt: new Date().toISOString(),
      bootMs,
      saveMs: saved.durationMs,
      stateBytes,
      ramFile: p.ram,
      ramBytes,
      ...(waiter ? { reidentifyWaiter: waiter } : {}),
    };
    const tmp = `${p.manifest}.tmp`;
    await writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, p.manifest);
    d.log.info(
      {
        template: hash.slice(0, 16),
        boot_ms: bootMs,
        save_ms: saved.durationMs,
        state_bytes: stateBytes,
        ram_bytes: ramBytes,
      },
      'warm template saved',
    );
    return { dir, manifest, disk: p.disk, state: p.state, ram: p.ram };
  } catch (err) {
    if (handle) {
      await handle.kill('SIGKILL').catch(() => undefined);
      await handle.waitExit().catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
    throw err;
  } finally {
    if (port !== undefined) releasePort(port);
    await tap?.release().catch(() => undefined);
  }
}

/** A locally administered MAC for a template (clones in bridge mode switch to their own). */
export function templateMac(hash: string): string {
  const h = hash.slice(0, 8);
  return `52:54:${h.slice(0, 2)}:${h.slice(2, 4)}:${h.slice(4, 6)}:${h.slice(6, 8)}`;
}

/**
 * Make a finished template's files durable and read-only: the disk every clone's overlay backs
 * on, the RAM file every clone maps and the device state (a MAP_PRIVATE page no clone has written
 * yet reads the file as it is now, so nothing may change it while a clone runs). Flushed before
 * template.json is written, so a host crash cannot leave a manifest over half-written RAM.
 */
export async function sealTemplateFiles(paths: string[]): Promise<void> {
  for (const path of paths) {
    const fh = await open(path, 'r');
    try {
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await chmod(path, 0o444);
  }
}

/** What holdRamOpenable does to the file system (tests inject a record of it). */
export interface RamFileOps {
  canWrite(path: string): boolean;
  chmod(path: string, mode: number): void;
}

const hostRamOps: RamFileOps = {
  canWrite: (path) => {
    try {
      accessSync(path, fsc.W_OK);
      return true;
    } catch {
      return false;
    }
  },
  chmod: (path, mode) => chmodSync(path, mode),
};

const ramHolders = new Map<string, { holders: number; granted: boolean }>();

/**
 * Let this process's VMMs open a read-only template RAM file for as long as the returned release
 * is not called. QEMU 7.2 opens a memory-backend-file read-write even with share=off (its
 * read-only open, `readonly=on,rom=off`, came in 8.2), so a VMM of a non-root daemon needs the
 * owner's write bit at the moment it starts; it never writes the file (MAP_PRIVATE). The bit is
 * granted to the first holder and taken back when the last one releases, which is once the clone
 * has loaded its state (the file is open and mapped by then). Root needs nothing granted. Sync
 * calls: no other start can interleave between the check and the chmod.
 */
export function holdRamOpenable(ram: string, ops: RamFileOps = hostRamOps): () => void {
  let h = ramHolders.get(ram);
  if (h) h.holders++;
  else {
    const granted = !ops.canWrite(ram);
    if (granted) ops.chmod(ram, 0o644);
    h = { holders: 1, granted };
    ramHolders.set(ram, h);
  }
  const held = h;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--held.holders > 0) return;
    ramHolders.delete(ram);
    if (!held.granted) return;
    try {
      ops.chmod(ram, 0o444);
    } catch {
      // The template went meanwhile (a failed build's cleanup): nothing left to protect.
    }
  };
}

/** Where a restore's time went, ms: VMM spawned → QMP answering, the state loaded, `cont`. */
export interface RestoreTimes {
  startMs: number;
  loadMs: number;
  resumeMs: number;
}

/** e.g. `QEMU up 62 ms, state loaded 85 ms, cont 3 ms` (the restore step's closing detail). Pure. */
export function formatRestoreTimes(t: RestoreTimes): string {
  return `QEMU up ${t.startMs} ms, state loaded ${t.loadMs} ms, cont ${t.resumeMs} ms`;
}

/**
 * Start a VMM whose RAM maps a saved VM's shared RAM file copy-on-write (spec.memory share=off,
 * incoming `defer`) and load the device state saved with x-ignore-shared, then `cont`. Returns
 * the running handle and where the time went (loadMs: loading the state). On failure the VMM is
 * killed.
 */
export async function startFromSharedState(
  d: Pick<WarmDeps, 'driver' | 'log'>,
  spec: VmLaunchSpec,
  statePath: string,
): Promise<{ handle: VmmHandle } & RestoreTimes> {
  if (!spec.memory || spec.memory.share || spec.incoming !== INCOMING_DEFER)
    throw new EngineError('invalid_spec', 'a restore maps the RAM file share=off with -incoming defer');
  const release = holdRamOpenable(spec.memory.backendFile);
  let handle: VmmHandle | undefined;
  const ms = (from: number): number => Math.round(performance.now() - from);
  try {
    const t0 = performance.now();
    handle = await d.driver.start(d.driver.prepare(spec), { logger: d.log });
    const startMs = ms(t0);
    if (!handle.loadState) throw new EngineError('unsupported', 'warm clones need QEMU (QMP)');
    const loaded = await handle.loadState(statePath, { ignoreShared: true });
    const t1 = performance.now();
    await handle.resume();
    return { handle, startMs, loadMs: loaded.durationMs, resumeMs: ms(t1) };
  } catch (err) {
    if (handle) {
      await handle.kill('SIGKILL').catch(() => undefined);
      await handle.waitExit().catch(() => undefined);
    }
    throw err;
  } finally {
    release();
  }
}

/**
 * Start a clone's VMM from a template: QEMU with the template's configuration, its RAM file
 * mapped copy-on-write and `-incoming defer`; load the device state, then `cont`. Returns the
 * running handle; `onTimes` hears where the time went.
 */
export async function startClone(
  d: Pick<WarmDeps, 'driver' | 'log'>,
  tpl: WarmTemplate,
  target: CloneTarget,
  onTimes?: (t: RestoreTimes) => void,
): Promise<VmmHandle> {
  const { handle, ...times } = await startFromSharedState(
    d,
    cloneLaunchSpec(tpl.manifest.spec, target),
    tpl.state,
  );
  d.log.debug({ vm: target.id, ...times }, 'warm clone state loaded');
  onTimes?.(times);
  return handle;
}

/** Whether a template's key still matches its image, kernel and engine as they are now. */
export async function isCurrent(
  image: ImageRow,
  kernel: KernelRow,
  manifest: TemplateManifest,
  engine: { version: string; accel: Accel },
): Promise<boolean> {
  const now = await warmKey(image, kernel, manifest.key, engine).catch(() => undefined);
  return now !== undefined && warmKeyHash(now) === manifest.keyHash;
}

/**
 * Remove an image's templates that are unfinished or no longer current (isCurrent), unless a
 * VM's disk still backs on them (`inUse`) or they are being built.
 */
export async function sweepTemplates(
  image: ImageRow,
  kernel: KernelRow,
  engine: { version: string; accel: Accel },
  inUse: (hash16: string) => boolean,
  log: Logger,
): Promise<string[]> {
  const removed: string[] = [];
  for (const t of await listTemplates(image)) {
    const beingBuilt = [...building.keys()].some((h) => h.startsWith(t.hash16));
    if (inUse(t.hash16) || beingBuilt) continue;
    if (t.manifest && (await isCurrent(image, kernel, t.manifest, engine))) continue;
    await rm(t.dir, { recursive: true, force: true });
    removed.push(t.hash16);
    log.info({ template: t.hash16 }, 'stale warm template removed');
  }
  return removed;
}
