import type { Image, Kernel, Operation, Vm, WarmTemplate } from '../../generated/types.gen.ts';
import { formatEgress } from '../egress/rules.ts';
import { sizeToBytes } from '../util/size.ts';

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 59_950) return `${(ms / 1000).toFixed(1)} s`;
  const totalS = Math.round(ms / 1000);
  const m = Math.floor(totalS / 60);
  if (m < 60) return `${m}m${totalS % 60}s`;
  return `${Math.floor(m / 60)}h${m % 60}m`;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

/** Bytes for people: `0 B`, `512 B`, `1.5 KiB`, `4.0 GiB` (powers of 1024, one decimal above bytes). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '?';
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < BYTE_UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  if (u === 0) return `${Math.round(v)} B`;
  // 1023.96 KiB would print as "1024.0 KiB"; step up instead.
  if (Number(v.toFixed(1)) >= 1024 && u < BYTE_UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${v.toFixed(1)} ${BYTE_UNITS[u]}`;
}

/** Memory given in MiB (as VMs record it): `512 MiB`, `1.0 GiB`. */
export function formatMiB(mib: number): string {
  return mib < 1024 ? `${mib} MiB` : formatBytes(mib * 1024 * 1024);
}

/** How long ago (or, for a future time, how soon) an ISO timestamp is: `just now`, `3m ago`, `2h ago`, `5d ago`. */
export function formatRelativeTime(iso: string, now: number = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '?';
  const diff = now - t;
  const abs = Math.abs(diff);
  let text: string;
  if (abs < 5_000) return 'just now';
  if (abs < 60_000) text = `${Math.floor(abs / 1000)}s`;
  else if (abs < 3_600_000) text = `${Math.floor(abs / 60_000)}m`;
  else if (abs < 86_400_000) text = `${Math.floor(abs / 3_600_000)}h`;
  else if (abs < 60 * 86_400_000) text = `${Math.floor(abs / 86_400_000)}d`;
  else return new Date(t).toISOString().slice(0, 10);
  return diff >= 0 ? `${text} ago` : `in ${text}`;
}

/** A timestamp for a detail view: `2026-01-14 09:31:02 UTC (3m ago)`. */
export function formatTimestamp(iso: string, now: number = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const rel = formatRelativeTime(iso, now);
  const abs = `${new Date(t).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
  // Long ago, the relative form is just the date again.
  return /^\d{4}-/.test(rel) ? abs : `${abs} (${rel})`;
}

/**
 * Read a size the way people write it — `4G`, `4g`, `4GiB`, `4GB`, `512M`, `1048576` — into the wire
 * form (`4G`, digits plus an optional K/M/G/T suffix, powers of 1024). Returns undefined when it is
 * not a size.
 */
export function normalizeSize(input: string): string | undefined {
  const m = /^\s*([0-9]{1,12})\s*([kmgt]?)(?:i?b)?\s*$/i.exec(input);
  if (!m) return undefined;
  const unit = m[2]!.toUpperCase();
  return `${Number(m[1])}${unit}`;
}

/** A size (as normalizeSize accepts it) in bytes, or undefined when it is not a size. */
export function parseSizeBytes(input: string): number | undefined {
  const n = normalizeSize(input);
  return n === undefined ? undefined : sizeToBytes(n);
}

/** Milliseconds as a compact elapsed-time column: `  0.0s`, ` 12.3s`, `123.4s`. */
export function formatElapsed(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1).padStart(5)}s`;
}

/** Whether to colour a stream: a TTY, and NO_COLOR unset (FORCE_COLOR forces it on). */
export function useColor(stream: { isTTY?: boolean }): boolean {
  if (process.env.FORCE_COLOR !== undefined && process.env.FORCE_COLOR !== '0') return true;
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false;
  return stream.isTTY === true;
}

const SGR = { bold: 1, dim: 2, red: 31, green: 32, yellow: 33, cyan: 36 } as const;
export type Style = keyof typeof SGR;

/** Wrap s in an ANSI style when on is true. */
export function paint(on: boolean, style: Style, s: string): string {
  return on && s !== '' ? `\x1b[${SGR[style]}m${s}\x1b[0m` : s;
}

/** s without ANSI escape sequences (for measuring width). */
export function stripAnsi(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
}

/** Where SSH reaches a VM, and how it is networked: `user 127.0.0.1:42022`, `bridge 172.16.0.5 +nat`. */
export function formatVmNetwork(vm: Vm): string {
  const n = vm.network;
  const where =
    n.mode === 'user'
      ? n.ssh_host && n.ssh_port
        ? `${n.ssh_host}:${n.ssh_port}`
        : ''
      : (n.guest_ip ?? n.ssh_host ?? '');
  return `${n.mode}${where ? ` ${where}` : ''}${vm.nat ? ' +nat' : ''}`;
}

/** A VM's size in one phrase: `2 vCPU, 1.0 GiB RAM, 4.0 GiB disk`. */
export function formatVmSpec(vm: Pick<Vm, 'vcpus' | 'memory_mib' | 'disk_size_bytes'>): string {
  return `${vm.vcpus} vCPU, ${formatMiB(vm.memory_mib)} RAM, ${formatBytes(vm.disk_size_bytes)} disk`;
}

/** A VM's state, with the VMM's pid and accelerator while it runs. */
export function formatVmState(vm: Vm): string {
  const extra = [
    vm.pid !== undefined ? `pid ${vm.pid}` : '',
    vm.accel ?? '',
    // Paused by the idle timer rather than by request.
    vm.idle_paused_at !== undefined ? 'idle' : '',
    // Paused to disk: the space its saved state holds.
    vm.saved_bytes !== undefined ? `saved to disk, ${formatBytes(vm.saved_bytes)}` : '',
  ]
    .filter(Boolean)
    .join(', ');
  return extra ? `${vm.state} (${extra})` : vm.state;
}

/** A VM's egress policy in its own syntax, and the op that set it (its log lines carry that id). */
export function formatVmEgress(vm: Pick<Vm, 'egress' | 'egress_op_id'>): string {
  const text = formatEgress(vm.egress);
  const what = vm.egress.mode === 'none' ? `${text} (nothing leaves the VM)` : text;
  return vm.egress_op_id && vm.egress.mode !== 'all' ? `${what}, set by ${vm.egress_op_id}` : what;
}

/** The detail view of a VM. */
export function vmFields(vm: Vm, now: number = Date.now()): [string, string | undefined][] {
  const n = vm.network;
  return [
    ['name', vm.name],
    ['id', vm.id],
    ['state', formatVmState(vm)],
    ['why', vm.state_reason],
    [
      'idle pause',
      vm.idle_pause_after !== undefined
        ? `after ${vm.idle_pause_after}${vm.last_used_at ? `, last used ${formatRelativeTime(vm.last_used_at, now)}` : ''}`
        : undefined,
    ],
    ['last error', vm.last_error],
    ['last exit', vm.last_exit],
    ['image', vm.image],
    ['vcpus', String(vm.vcpus)],
    ['memory', formatMiB(vm.memory_mib)],
    ['disk', formatBytes(vm.disk_size_bytes)],
    ['network', n.mode === 'user' ? 'user (QEMU user-mode, SSH forwarded)' : 'bridge'],
    ['guest ip', n.guest_ip],
    ['ssh', n.ssh_host && n.ssh_port ? `${n.ssh_host}:${n.ssh_port}` : undefined],
    ['mac', n.mac],
    ['nat', vm.nat ? 'on' : 'off'],
    ['egress', formatVmEgress(vm)],
    [
      'secrets',
      vm.secrets.length > 0 ? vm.secrets.map((x) => `${x.name}@${x.hosts.join(',')}`).join(' ') : undefined,
    ],
    [
      'workspace',
      vm.workspace
        ? `${vm.workspace.guest_path} ← ${vm.workspace.host_path} at ${vm.workspace.base_commit.slice(0, 12)}${vm.workspace.branch ? ` (${vm.workspace.branch})` : ''}, ${vm.workspace.files} files`
        : undefined,
    ],
    ['boots', String(vm.boot_count)],
    ['created', formatTimestamp(vm.created_at, now)],
    ['started', vm.last_started_at ? formatTimestamp(vm.last_started_at, now) : undefined],
    ['updated', formatTimestamp(vm.updated_at, now)],
    ['dir', vm.vm_dir],
  ];
}

/** An OCI image's run defaults (vm run/exec/ssh use them), one line each; none for other images. */
function ociConfigFields(img: Image): [string, string | undefined][] {
  const c = img.oci_config;
  if (!c) return [];
  const argv = (a: string[] | undefined): string | undefined => (a ? JSON.stringify(a) : undefined);
  return [
    ['env', c.env.length > 0 ? c.env.join(' ') : undefined],
    ['workdir', c.working_dir],
    ['user', c.user],
    ['entrypoint', argv(c.entrypoint)],
    ['cmd', argv(c.cmd)],
  ];
}

/** The detail view of an image. */
export function imageFields(img: Image, now: number = Date.now()): [string, string | undefined][] {
  return [
    ['name', img.name],
    ['id', img.id],
    ['default', img.default ? 'yes' : 'no'],
    ['source', img.source],
    ['kernel', `${img.kernel} (${img.kernel_version})`],
    ['size', formatBytes(img.size_bytes)],
    ['rootfs', img.rootfs_path],
    ['recipe', img.recipe_hash],
    ['parent', img.parent],
    ['reference', img.reference],
    ['digest', img.digest],
    ...ociConfigFields(img),
    ['created', formatTimestamp(img.created_at, now)],
    ['used by', img.used_by.length > 0 ? img.used_by.join(', ') : '(no VMs)'],
    ...(img.warm_templates === undefined
      ? []
      : img.warm_templates.length === 0
        ? ([['warm', '(no templates: banger image warm)']] as [string, string][])
        : img.warm_templates.map((t, i): [string, string] => [i === 0 ? 'warm' : '', formatWarmTemplate(t)])),
  ];
}

/** One warm template on a line: `1a2b3c4d5e6f7a8b 2 vCPU, 1024 MiB, 4.0 GiB, user, tcg; state 150 MiB; 2 VMs`. */
export function formatWarmTemplate(t: WarmTemplate): string {
  const users = t.used_by.length === 0 ? 'no VMs' : `backs ${t.used_by.join(', ')}`;
  return `${t.id} ${t.vcpus} vCPU, ${t.memory_mib} MiB, ${formatBytes(t.disk_size_bytes)}, ${t.network}, ${t.accel}; state ${formatBytes(t.state_bytes)}; ${users}${t.stale ? '; STALE (not used for new VMs)' : ''}`;
}

/** The detail view of a kernel. */
export function kernelFields(k: Kernel, now: number = Date.now()): [string, string | undefined][] {
  return [
    ['name', k.name],
    ['id', k.id],
    ['version', k.version],
    ['source', k.source],
    ['kernel', k.kernel_path],
    ['initrd', k.initrd_path ?? '(none)'],
    ['created', formatTimestamp(k.created_at, now)],
    ['used by', k.used_by.length > 0 ? k.used_by.join(', ') : '(no images)'],
  ];
}

/**
 * Memory as people write it, in MiB: a bare number is MiB (`2048`), a unit converts (`2G`, `512M`,
 * `2GiB`). Throws a readable error for anything else, or for sizes that are not whole MiB.
 */
export function parseMemoryMiB(input: string): number {
  if (/^\s*[0-9]{1,9}\s*$/.test(input)) return Number(input);
  const bytes = parseSizeBytes(input);
  if (bytes === undefined || !/[kmgt]/i.test(input)) {
    throw new Error(`"${input}" is not a memory size: give MiB (2048) or a size with a unit (2G, 512M)`);
  }
  const mib = bytes / 1024 ** 2;
  if (!Number.isInteger(mib)) throw new Error(`"${input}" is not a whole number of MiB`);
  return mib;
}

/** How a create booted its VM: `warm start (template 1a2b3c4d5e6f7a8b)`, or `cold boot`. */
export function formatBoot(vm: Vm): string {
  return vm.warm_template ? `warm start from template ${vm.warm_template}` : 'cold boot';
}

/** Why a create's warm start fell back to a cold boot (its warm_fallback step), if it did. */
export function warmFallback(op: Operation): string | undefined {
  return op.steps.find((s) => s.name === 'warm_fallback')?.detail;
}
