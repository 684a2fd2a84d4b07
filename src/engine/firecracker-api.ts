// Pure builders for Firecracker: the argv and the ordered API calls (documented HTTP API over
// the unix socket: PUT /machine-config, /boot-source, /drives/{id}, /network-interfaces/{id},
// /vsock, then PUT /actions InstanceStart). Same VmLaunchSpec as QEMU; what Firecracker cannot
// do (TCG, user-mode networking, qcow2, QEMU-style -incoming) is rejected here.
import { join } from 'node:path';
import type { FirecrackerLaunchPlan, PlanFiles, VmLaunchSpec, VmmApiRequest } from './driver.ts';
import { EngineError } from './errors.ts';
import { HANDLES_FILE } from './handles.ts';
import { argvHash } from './qemu-argv.ts';
import { checkSocketPath, validateLaunchSpec, withKernelParams } from './spec.ts';

export const DEFAULT_FIRECRACKER_BINARY = 'firecracker';
/** Guest CID of the agent vsock (3 is the first non-reserved CID; each VM has its own device). */
export const AGENT_VSOCK_CID = 3;

export function firecrackerFiles(spec: VmLaunchSpec): PlanFiles {
  const files: PlanFiles = {
    vmDir: spec.vmDir,
    handles: join(spec.vmDir, HANDLES_FILE),
    stderrLog: join(spec.vmDir, 'firecracker.stderr'),
    serialLog: spec.serialLog,
    apiSocket: join(spec.vmDir, 'firecracker.sock'),
    vmmLog: join(spec.vmDir, 'firecracker.log'),
  };
  if (spec.agentSocket !== undefined) files.agentSocket = spec.agentSocket;
  return files;
}

/** Firecracker instance ids allow only alphanumerics and '-', up to 64 characters. */
export function firecrackerInstanceId(id: string): string {
  return id.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 64);
}

function unsupported(message: string): EngineError {
  return new EngineError('unsupported', `Firecracker: ${message}`);
}

export function validateForFirecracker(spec: VmLaunchSpec): void {
  validateLaunchSpec(spec);
  if (spec.accel !== 'kvm') throw unsupported('needs KVM; there is no TCG mode');
  if (spec.net.mode === 'user') throw unsupported('no user-mode networking; use a tap device');
  if (spec.vcpus > 32) throw unsupported('at most 32 vCPUs');
  spec.disks.forEach((d, i) => {
    if (d.format !== 'raw') throw unsupported(`disks[${i}] is ${d.format}; only raw images are supported`);
  });
  if (spec.incoming !== undefined) throw unsupported('restore goes through /snapshot/load, not -incoming');
  checkSocketPath('API socket (vmDir/firecracker.sock)', firecrackerFiles(spec).apiSocket as string);
}

/** Boot args: the caller's, plus the serial console and Firecracker's usual reboot/panic/pci. */
export function firecrackerBootArgs(spec: VmLaunchSpec): string {
  return withKernelParams(spec.cmdline, [
    ['console', 'ttyS0'],
    ['reboot', 'k'],
    ['panic', '1'],
    ['pci', 'off'],
  ]);
}

export function buildFirecrackerArgv(spec: VmLaunchSpec): string[] {
  const files = firecrackerFiles(spec);
  return [
    '--api-sock',
    files.apiSocket as string,
    '--id',
    firecrackerInstanceId(spec.id),
    '--log-path',
    files.vmmLog as string,
    '--level',
    'Info',
  ];
}

/** The configuration calls, in order. InstanceStart is separate (see fcInstanceStart). */
export function buildFirecrackerRequests(spec: VmLaunchSpec): VmmApiRequest[] {
  const reqs: VmmApiRequest[] = [
    {
      method: 'PUT',
      path: '/machine-config',
      body: { vcpu_count: spec.vcpus, mem_size_mib: spec.memoryMiB },
    },
  ];
  const boot: Record<string, unknown> = {
    kernel_image_path: spec.kernel,
    boot_args: firecrackerBootArgs(spec),
  };
  if (spec.initrd !== undefined) boot.initrd_path = spec.initrd;
  reqs.push({ method: 'PUT', path: '/boot-source', body: boot });
  spec.disks.forEach((d, i) => {
    const id = `disk${i}`;
    // Never is_root_device: the caller's cmdline names root=, as under QEMU (vda, vdb, ...).
    reqs.push({
      method: 'PUT',
      path: `/drives/${id}`,
      body: { drive_id: id, path_on_host: d.path, is_root_device: false, is_read_only: d.readOnly === true },
    });
  });
  if (spec.net.mode === 'tap') {
    reqs.push({
      method: 'PUT',
      path: '/network-interfaces/net0',
      body: { iface_id: 'net0', host_dev_name: spec.net.tap, guest_mac: spec.net.mac },
    });
  }
  if (spec.agentSocket !== undefined) {
    reqs.push({
      method: 'PUT',
      path: '/vsock',
      body: { guest_cid: AGENT_VSOCK_CID, uds_path: spec.agentSocket },
    });
  }
  return reqs;
}

export const fcInstanceStart: VmmApiRequest = {
  method: 'PUT',
  path: '/actions',
  body: { action_type: 'InstanceStart' },
};
export const fcSendCtrlAltDel: VmmApiRequest = {
  method: 'PUT',
  path: '/actions',
  body: { action_type: 'SendCtrlAltDel' },
};
export const fcDescribeInstance: VmmApiRequest = { method: 'GET', path: '/' };
export const fcPause: VmmApiRequest = { method: 'PATCH', path: '/vm', body: { state: 'Paused' } };
export const fcResume: VmmApiRequest = { method: 'PATCH', path: '/vm', body: { state: 'Resumed' } };

export function prepareFirecrackerPlan(
  spec: VmLaunchSpec,
  opts: { binary?: string } = {},
): FirecrackerLaunchPlan {
  validateForFirecracker(spec);
  const binary = opts.binary ?? DEFAULT_FIRECRACKER_BINARY;
  const argv = buildFirecrackerArgv(spec);
  const apiRequests = buildFirecrackerRequests(spec);
  return {
    driver: 'firecracker',
    id: spec.id,
    spec,
    binary,
    argv,
    // The configuration lives in the API calls, so they are part of the identity hash.
    argvHash: argvHash(binary, [...argv, JSON.stringify(apiRequests)]),
    files: firecrackerFiles(spec),
    apiRequests,
  };
}

/** Firecracker InstanceInfo.state -> VmmStatus-ish. */
export function mapFirecrackerState(state: unknown): 'running' | 'paused' {
  return state === 'Running' ? 'running' : 'paused';
}
