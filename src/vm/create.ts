// The create pipeline: named steps, each with an undo, durations recorded on the operation.
// A failure or a cancel undoes every completed step in reverse, so nothing is left behind.
import { mkdir, rm } from 'node:fs/promises';
import { buildSeedImage, randomMachineId } from '../image/seed.ts';
import type { VmNetwork } from '../daemon/network.ts';
import type { OperationTracker } from '../daemon/operations.ts';
import { ErrorResponse } from '../rpc/errors.ts';
import type { ImageRow, KernelRow, NewVm, Store, VmRow } from '../store/index.ts';
import { createOverlay } from './disk.ts';
import { vmFiles } from './layout.ts';
import { bootVmm, formatReadyTimes, waitReady, type MachineDeps } from './machine.ts';
import { generateHostKey, hostKeyAlias, pinHostKey, unpinHostKey } from './ssh.ts';

export interface CreateDeps extends MachineDeps {
  store: Store;
  installPubKey: () => Promise<string>;
  resolveImage: (
    name: string | undefined,
    opts: { signal: AbortSignal; onProgress: (d: string) => void },
  ) => Promise<{ image: ImageRow; kernel: KernelRow }>;
}

export interface CreateRequest {
  /** The VM to record once its image is known (the name is reserved by the caller until then). */
  draft: Omit<NewVm, 'imageId'> & { id: string };
  imageName: string | undefined;
  start: boolean;
  /** Called once the VM row exists. */
  onRecorded?: (vm: VmRow) => void;
}

function requireNetwork(d: CreateDeps): VmNetwork {
  if (!d.network)
    throw new ErrorResponse('bad_request', 'bridge networking needs the root helper (bangerd-root)');
  return d.network;
}

export async function runCreate(d: CreateDeps, t: OperationTracker, req: CreateRequest): Promise<VmRow> {
  const files = vmFiles(d.stateDir, req.draft.id);
  const { image, kernel } = await t.step('resolve_image', (signal) =>
    d.resolveImage(req.imageName, { signal, onProgress: (m) => t.progress(m) }),
  );
  let vm = await t.step(
    'record',
    async () =>
      // A bridged VM's address is allocated in the same transaction that records it.
      d.store.transaction(() =>
        d.store.vms.insert({
          ...req.draft,
          imageId: image.id,
          state: 'creating',
          guestIp: req.draft.networkMode === 'bridge' ? requireNetwork(d).allocateGuestIp() : null,
        }),
      ),
    async (row) => {
      d.store.vms.delete(row.id);
    },
  );
  req.onRecorded?.(vm);

  if (vm.networkMode === 'bridge') {
    // Bridge, the VM's tap (owned by this daemon's uid) and, with --nat, its NAT rules.
    const net = requireNetwork(d);
    await t.step(
      'network',
      () => net.attach(vm),
      () => net.detach(vm),
    );
  }

  await t.step(
    'prepare_disk',
    async () => {
      await mkdir(files.dir, { recursive: true, mode: 0o700 });
      try {
        await createOverlay(
          image.rootfsPath,
          files.overlay,
          vm.diskSizeBytes,
          image.rootfsFormat === 'qcow2' ? 'qcow2' : 'raw',
        );
      } catch (err) {
        // A failed step registers no undo: remove the directory it made here.
        await rm(files.dir, { recursive: true, force: true });
        throw err;
      }
    },
    () => rm(files.dir, { recursive: true, force: true }),
  );

  const alias = hostKeyAlias(vm.name);
  await t.step(
    'seed',
    async () => {
      const hostKey = await generateHostKey(files.dir);
      await buildSeedImage({
        path: files.seed,
        authorizedKeys: [await d.installPubKey()],
        hostKeyPrivate: hostKey.privateKey,
        hostKeyPublic: hostKey.publicKey,
        hostname: vm.name,
        machineId: randomMachineId(),
        nameservers: vm.networkMode === 'bridge' ? requireNetwork(d).guest(vm).nameservers : ['10.0.2.3'],
      });
      await pinHostKey(d.ssh, alias, hostKey.publicKey);
      vm = d.store.vms.update(vm.id, { sshHostKey: hostKey.publicKey });
    },
    () => unpinHostKey(d.ssh, alias),
  );

  if (!req.start) {
    return d.store.vms.update(vm.id, { state: 'stopped' });
  }

  vm = d.store.vms.update(vm.id, { state: 'starting' });
  await t.step(
    'boot',
    () => bootVmm(d, vm, kernel, 'vm.create'),
    async () => {
      const h = d.runtime.get(vm.id);
      if (h) {
        d.runtime.expectExit(vm.id);
        await h.kill('SIGKILL').catch(() => undefined);
        await h.waitExit().catch(() => undefined);
      }
    },
  );
  await t.step('wait_ready', async (signal) => {
    const r = await waitReady(d, vm, signal, (m) => t.progress(m));
    // The closing detail keeps when each guest stage was reached (`banger vm create`, npm run bench).
    t.progress(formatReadyTimes(r.times));
    return r;
  });
  vm = d.store.vms.recordBoot(vm.id);
  return d.store.vms.update(vm.id, { state: 'running', lastError: null });
}
