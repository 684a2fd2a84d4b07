import type { Vm } from '../../generated/types.gen.ts';
import type { ImageRow, VmRow } from '../store/index.ts';
import { vmFiles } from './layout.ts';
import type { MachineDeps } from './machine.ts';
import { asWorkspace } from './workspace.ts';

export function vmToWire(d: MachineDeps, row: VmRow, image: ImageRow | undefined): Vm {
  const h = d.runtime.get(row.id);
  const vm: Vm = {
    id: row.id,
    name: row.name,
    state: row.state,
    image: image?.name ?? '(deleted)',
    vcpus: row.vcpus,
    memory_mib: row.memoryMib,
    disk_size_bytes: row.diskSizeBytes,
    network: { mode: row.networkMode === 'bridge' ? 'bridge' : 'user', mac: row.mac },
    nat: row.nat,
    egress: { mode: row.egress.mode, rules: row.egress.rules.map((r) => ({ ...r })) },
    secrets: row.secrets.map((s) => ({ name: s.name, hosts: [...s.hosts] })),
    boot_count: row.bootCount,
    created_at: row.createdAt,
    updated_at: row.updatedAt,
    vm_dir: vmFiles(d.stateDir, row.id).dir,
  };
  if (row.guestIp) vm.network.guest_ip = row.guestIp;
  if (h) {
    vm.pid = h.pid;
    if (row.networkMode === 'bridge' && row.guestIp) {
      // Bridged: SSH goes straight to the guest's address on banger's bridge.
      vm.network.ssh_host = row.guestIp;
      vm.network.ssh_port = 22;
    } else if (h.record.sshHostPort) {
      vm.network.ssh_host = '127.0.0.1';
      vm.network.ssh_port = h.record.sshHostPort;
    }
  }
  if (row.lastStartedAt) vm.last_started_at = row.lastStartedAt;
  if (row.lastError) vm.last_error = row.lastError;
  if (row.stateReason) vm.state_reason = row.stateReason;
  if (row.lastExit) vm.last_exit = row.lastExit;
  if (row.warmTemplate) vm.warm_template = row.warmTemplate;
  if (row.egressOpId) vm.egress_op_id = row.egressOpId;
  if (row.savedState) {
    vm.saved_bytes = row.savedState.bytes;
    vm.saved_at = row.savedState.savedAt;
  }
  const ws = asWorkspace(row.workspace);
  if (ws) vm.workspace = ws;
  return vm;
}
