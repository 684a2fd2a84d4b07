import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { StoreError } from './errors.ts';
import { firstFreeHost } from './ipv4.ts';
import { type EgressPolicy, DEFAULT_EGRESS, parseEgress } from '../egress/rules.ts';
import { type Clock, type Row, bool, int, iso, json, newId, oneOf, str, strOrNull, toJson } from './rows.ts';

export const VM_STATES = [
  'creating',
  'stopped',
  'starting',
  'running',
  'pausing',
  'paused',
  'resuming',
  'stopping',
  'error',
  'deleting',
] as const;
export type VmState = (typeof VM_STATES)[number];

export interface VmRow {
  id: string;
  name: string;
  imageId: string;
  state: VmState;
  vcpus: number;
  memoryMib: number;
  diskSizeBytes: number;
  networkMode: string;
  guestIp: string | null;
  mac: string;
  nat: boolean;
  sshHostKey: string | null;
  /** Parsed workspace_json (null when unset). The store does not interpret it. */
  workspace: unknown;
  lastError: string | null;
  bootCount: number;
  createdAt: string;
  updatedAt: string;
  lastStartedAt: string | null;
  /** The warm template (its key hash) this VM was cloned from; null when it booted cold. */
  warmTemplate: string | null;
  /** Why the VM is in its state (e.g. `paused`: the host disk is full), null when self-evident. */
  stateReason: string | null;
  /** How the VMM last ended when nobody asked it to (e.g. `killed by signal SIGKILL at …`). */
  lastExit: string | null;
  /** What a VM paused to disk holds (src/vm/pause.ts); null when it holds no saved state. */
  savedState: SavedStateInfo | null;
  /** Where the VM may connect (src/egress/rules.ts); `all` for VMs made before egress policies. */
  egress: EgressPolicy;
  /** Secrets the VM may use: names and the hosts their values go to (never the values). */
  secrets: VmSecretRef[];
  /** The op that set the egress policy (create or the last vm.set); its egress log lines carry it. */
  egressOpId: string | null;
  /**
   * Idle pause (src/daemon/idle.ts), the VM's own setting: null follows the daemon's
   * [vm_defaults] idle_pause_after, 0 never pauses it. (Optional: rows from toVm always carry it.)
   */
  idlePauseAfterMs?: number | null;
  /** When the VM was last used (an RPC on it, an SSH session, vm.touch); persisted in steps. */
  lastUsedAt?: string | null;
  /** Set while the idle timer pauses the VM or holds it paused (cleared when it runs again). */
  idlePausedAt?: string | null;
}

/** A secret a VM may use, by name, and the hosts the egress proxy may send its value to. */
export interface VmSecretRef {
  name: string;
  hosts: string[];
  /** The random stand-in the guest sees instead of the value (src/egress/secrets.ts). */
  placeholder?: string;
}

/** The saved state of a VM paused to disk, as `vm list`/`vm show` report it. */
export interface SavedStateInfo {
  /** Disk space the saved state takes (device state and guest RAM). */
  bytes: number;
  savedAt: string;
  /** QMP stop → state file durable, ms. */
  saveMs: number;
}

export interface NewVm {
  /** Generated with newId() when omitted. */
  id?: string;
  name: string;
  imageId: string;
  /** Defaults to 'creating'. */
  state?: VmState;
  /** 1..64 (CHECK constraint). */
  vcpus: number;
  /** 64..262144 (CHECK constraint). */
  memoryMib: number;
  diskSizeBytes: number;
  networkMode: string;
  guestIp?: string | null;
  mac: string;
  nat?: boolean;
  sshHostKey?: string | null;
  /** Stored as JSON. */
  workspace?: unknown;
  lastError?: string | null;
  /** Defaults to now; updatedAt starts equal to it. */
  createdAt?: Date | string;
  warmTemplate?: string | null;
  /** Defaults to DEFAULT_EGRESS (`all`). */
  egress?: EgressPolicy;
  /** Defaults to none. */
  secrets?: VmSecretRef[];
  egressOpId?: string | null;
  /** Null (default): the daemon's [vm_defaults] idle_pause_after; 0: never. */
  idlePauseAfterMs?: number | null;
}

/**
 * A partial update: properties left undefined are unchanged; null clears a nullable column.
 * updated_at is always set to now.
 */
export interface VmPatch {
  name?: string;
  imageId?: string;
  vcpus?: number;
  memoryMib?: number;
  diskSizeBytes?: number;
  networkMode?: string;
  guestIp?: string | null;
  mac?: string;
  nat?: boolean;
  sshHostKey?: string | null;
  workspace?: unknown;
  lastError?: string | null;
  bootCount?: number;
  lastStartedAt?: Date | string | null;
  warmTemplate?: string | null;
  lastExit?: string | null;
  savedState?: SavedStateInfo | null;
  egress?: EgressPolicy;
  secrets?: VmSecretRef[];
  egressOpId?: string | null;
  idlePauseAfterMs?: number | null;
}

/**
 * A state change with what goes with it. Written only by the lifecycle owner's setState
 * (src/vm/lifecycle.ts), which checks the transition table first.
 */
export interface VmStateWrite {
  state: VmState;
  /** Why (null clears it). */
  reason: string | null;
  /** `error` keeps its message in last_error as well. */
  lastError?: string | null;
}

const COLS =
  'id, name, image_id, state, vcpus, memory_mib, disk_size_bytes, network_mode, guest_ip, mac, nat, ' +
  'ssh_host_key, workspace_json, last_error, boot_count, created_at, updated_at, last_started_at, ' +
  'warm_template, state_reason, last_exit, saved_state, egress, secrets, egress_op_id, ' +
  'idle_pause_after_ms, last_used_at, idle_paused_at';

// Patch property -> column, and how to bind the value.
const PATCHABLE: ReadonlyArray<[keyof VmPatch, string, (v: unknown) => SQLInputValue]> = [
  ['name', 'name', (v) => v as string],
  ['imageId', 'image_id', (v) => v as string],
  ['vcpus', 'vcpus', (v) => v as number],
  ['memoryMib', 'memory_mib', (v) => v as number],
  ['diskSizeBytes', 'disk_size_bytes', (v) => v as number],
  ['networkMode', 'network_mode', (v) => v as string],
  ['guestIp', 'guest_ip', (v) => v as string | null],
  ['mac', 'mac', (v) => v as string],
  ['nat', 'nat', (v) => (v ? 1 : 0)],
  ['sshHostKey', 'ssh_host_key', (v) => v as string | null],
  ['workspace', 'workspace_json', toJson],
  ['lastError', 'last_error', (v) => v as string | null],
  ['bootCount', 'boot_count', (v) => v as number],
  ['lastStartedAt', 'last_started_at', (v) => (v === null ? null : iso(v as Date | string))],
  ['warmTemplate', 'warm_template', (v) => v as string | null],
  ['lastExit', 'last_exit', (v) => v as string | null],
  ['savedState', 'saved_state', toJson],
  ['egress', 'egress', toJson],
  ['secrets', 'secrets', toJson],
  ['egressOpId', 'egress_op_id', (v) => v as string | null],
  ['idlePauseAfterMs', 'idle_pause_after_ms', (v) => v as number | null],
];

// One statement for every partial update: each column is rewritten only when its set_ flag is 1.
const UPDATE_SQL =
  'UPDATE vms SET ' +
  PATCHABLE.map(([, c]) => `${c} = CASE WHEN :set_${c} THEN :${c} ELSE ${c} END`).join(', ') +
  `, updated_at = :updated_at WHERE id = :id RETURNING ${COLS}`;

function savedInfo(v: unknown): SavedStateInfo | null {
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  if (typeof o.bytes !== 'number' || typeof o.savedAt !== 'string') return null;
  return { bytes: o.bytes, savedAt: o.savedAt, saveMs: typeof o.saveMs === 'number' ? o.saveMs : 0 };
}

/**
 * A stored policy, checked again on the way out: whatever is not a policy the parser accepts
 * reads as `none` (fail closed: a damaged row must not open a VM to everything).
 */
function egressFrom(v: unknown): EgressPolicy {
  if (typeof v !== 'object' || v === null) return { mode: 'none', rules: [] };
  const o = v as { mode?: unknown; rules?: unknown };
  if (o.mode === 'all' || o.mode === 'none') return { mode: o.mode, rules: [] };
  if (o.mode !== 'allow' || !Array.isArray(o.rules)) return { mode: 'none', rules: [] };
  const texts = (o.rules as unknown[]).map((r) =>
    typeof r === 'object' && r !== null ? (r as { text?: unknown }).text : undefined,
  );
  if (!texts.every((t): t is string => typeof t === 'string')) return { mode: 'none', rules: [] };
  try {
    return parseEgress(`allow=${texts.join(',')}`);
  } catch {
    return { mode: 'none', rules: [] };
  }
}

function secretsFrom(v: unknown): VmSecretRef[] {
  if (!Array.isArray(v)) return [];
  return (v as unknown[]).flatMap((s) => {
    if (typeof s !== 'object' || s === null) return [];
    const o = s as { name?: unknown; hosts?: unknown };
    if (typeof o.name !== 'string' || !Array.isArray(o.hosts)) return [];
    const hosts = (o.hosts as unknown[]).filter((h): h is string => typeof h === 'string');
    const ph = (s as { placeholder?: unknown }).placeholder;
    return [{ name: o.name, hosts, ...(typeof ph === 'string' ? { placeholder: ph } : {}) }];
  });
}

function toVm(r: Row): VmRow {
  const t = 'vms';
  return {
    id: str(r, t, 'id'),
    name: str(r, t, 'name'),
    imageId: str(r, t, 'image_id'),
    state: oneOf(r, t, 'state', VM_STATES),
    vcpus: int(r, t, 'vcpus'),
    memoryMib: int(r, t, 'memory_mib'),
    diskSizeBytes: int(r, t, 'disk_size_bytes'),
    networkMode: str(r, t, 'network_mode'),
    guestIp: strOrNull(r, t, 'guest_ip'),
    mac: str(r, t, 'mac'),
    nat: bool(r, t, 'nat'),
    sshHostKey: strOrNull(r, t, 'ssh_host_key'),
    workspace: json(r, t, 'workspace_json'),
    lastError: strOrNull(r, t, 'last_error'),
    bootCount: int(r, t, 'boot_count'),
    createdAt: str(r, t, 'created_at'),
    updatedAt: str(r, t, 'updated_at'),
    lastStartedAt: strOrNull(r, t, 'last_started_at'),
    warmTemplate: strOrNull(r, t, 'warm_template'),
    stateReason: strOrNull(r, t, 'state_reason'),
    lastExit: strOrNull(r, t, 'last_exit'),
    savedState: savedInfo(json(r, t, 'saved_state')),
    egress: egressFrom(json(r, t, 'egress')),
    secrets: secretsFrom(json(r, t, 'secrets')),
    egressOpId: strOrNull(r, t, 'egress_op_id'),
    idlePauseAfterMs: r.idle_pause_after_ms === null ? null : int(r, t, 'idle_pause_after_ms'),
    lastUsedAt: strOrNull(r, t, 'last_used_at'),
    idlePausedAt: strOrNull(r, t, 'idle_paused_at'),
  };
}

/** A VM as the idle tracker's cheap look sees it (src/daemon/idle.ts): id, own setting, mark. */
export type VmIdleFacts = Pick<VmRow, 'id' | 'idlePauseAfterMs' | 'idlePausedAt'>;

export class VmsRepo {
  readonly #now: Clock;
  readonly #insert: StatementSync;
  readonly #getById: StatementSync;
  readonly #getByName: StatementSync;
  readonly #list: StatementSync;
  readonly #update: StatementSync;
  readonly #recordBoot: StatementSync;
  readonly #delete: StatementSync;
  readonly #writeState: StatementSync;
  readonly #guestIps: StatementSync;
  readonly #touch: StatementSync;
  readonly #idlePaused: StatementSync;
  readonly #idleFacts: StatementSync;

  constructor(db: DatabaseSync, now: Clock) {
    this.#now = now;
    this.#insert = db.prepare(
      `INSERT INTO vms (${COLS}) VALUES (${COLS.split(',')
        .map(() => '?')
        .join(', ')}) RETURNING ${COLS}`,
    );
    this.#getById = db.prepare(`SELECT ${COLS} FROM vms WHERE id = ?`);
    this.#getByName = db.prepare(`SELECT ${COLS} FROM vms WHERE name = ?`);
    this.#list = db.prepare(`SELECT ${COLS} FROM vms ORDER BY name`);
    this.#update = db.prepare(UPDATE_SQL);
    this.#recordBoot = db.prepare(
      'UPDATE vms SET boot_count = boot_count + 1, last_started_at = :now, updated_at = :now ' +
        `WHERE id = :id RETURNING ${COLS}`,
    );
    this.#delete = db.prepare('DELETE FROM vms WHERE id = ?');
    this.#writeState = db.prepare(
      'UPDATE vms SET state = :state, state_reason = :reason, ' +
        'last_error = CASE WHEN :set_error THEN :last_error ELSE last_error END, updated_at = :now ' +
        `WHERE id = :id RETURNING ${COLS}`,
    );
    this.#guestIps = db.prepare('SELECT guest_ip FROM vms WHERE guest_ip IS NOT NULL');
    // Neither bumps updated_at: being used is not a change of the VM's record.
    this.#touch = db.prepare('UPDATE vms SET last_used_at = :at WHERE id = :id');
    this.#idlePaused = db.prepare('UPDATE vms SET idle_paused_at = :at WHERE id = :id');
    this.#idleFacts = db.prepare('SELECT id, idle_pause_after_ms, idle_paused_at FROM vms');
  }

  /** Every VM's id, own idle_pause_after and idle-pause mark: three columns, no whole rows. */
  listIdleFacts(): VmIdleFacts[] {
    const t = 'vms';
    return this.#idleFacts.all().map((r) => ({
      id: str(r, t, 'id'),
      idlePauseAfterMs: r.idle_pause_after_ms === null ? null : int(r, t, 'idle_pause_after_ms'),
      idlePausedAt: strOrNull(r, t, 'idle_paused_at'),
    }));
  }

  /** Record when the VM was last used (idle pause). Returns false if there is no such VM. */
  touch(id: string, at: Date | string): boolean {
    return Number(this.#touch.run({ id, at: iso(at) }).changes) > 0;
  }

  /** Mark (a time) or clear (null) the VM as paused by the idle timer. */
  setIdlePaused(id: string, at: Date | string | null): boolean {
    return Number(this.#idlePaused.run({ id, at: at === null ? null : iso(at) }).changes) > 0;
  }

  /**
   * Throws a UNIQUE violation (isUniqueViolation; uniqueViolationColumns tells 'vms.name' from
   * 'vms.guest_ip'), a FOREIGN KEY violation if imageId does not exist, a CHECK violation
   * (isCheckViolation) for an out-of-range vcpus/memoryMib or unknown state.
   */
  insert(vm: NewVm): VmRow {
    const created = iso(vm.createdAt ?? this.#now());
    const row = this.#insert.get(
      vm.id ?? newId(),
      vm.name,
      vm.imageId,
      vm.state ?? 'creating',
      vm.vcpus,
      vm.memoryMib,
      vm.diskSizeBytes,
      vm.networkMode,
      vm.guestIp ?? null,
      vm.mac,
      vm.nat ? 1 : 0,
      vm.sshHostKey ?? null,
      toJson(vm.workspace),
      vm.lastError ?? null,
      0,
      created,
      created,
      null,
      vm.warmTemplate ?? null,
      null,
      null,
      null,
      toJson(vm.egress ?? DEFAULT_EGRESS),
      toJson(vm.secrets ?? []),
      vm.egressOpId ?? null,
      vm.idlePauseAfterMs ?? null,
      null,
      null,
    );
    if (!row) throw new Error('vms insert returned no row');
    return toVm(row);
  }

  getById(id: string): VmRow | undefined {
    const r = this.#getById.get(id);
    return r ? toVm(r) : undefined;
  }

  getByName(name: string): VmRow | undefined {
    const r = this.#getByName.get(name);
    return r ? toVm(r) : undefined;
  }

  /** By name. */
  list(): VmRow[] {
    return this.#list.all().map(toVm);
  }

  /**
   * Apply a partial update and bump updated_at; returns the updated row. Throws StoreError
   * 'not_found' if there is no such VM, and the same constraint errors as insert.
   */
  update(id: string, patch: VmPatch): VmRow {
    const params: Record<string, SQLInputValue> = { id, updated_at: this.#now().toISOString() };
    for (const [prop, col, bind] of PATCHABLE) {
      const v = patch[prop];
      params[`set_${col}`] = v === undefined ? 0 : 1;
      params[col] = v === undefined ? null : bind(v);
    }
    const r = this.#update.get(params);
    if (!r) throw new StoreError('not_found', `no VM with id ${id}`);
    return toVm(r);
  }

  /**
   * Write a state (and its reason). Only the lifecycle owner calls this, after checking the
   * transition (src/vm/states.ts); everything else changes VMs through update(), which cannot
   * touch the state. Throws StoreError 'not_found'.
   */
  writeState(id: string, w: VmStateWrite): VmRow {
    const r = this.#writeState.get({
      id,
      state: w.state,
      reason: w.reason,
      set_error: w.lastError === undefined ? 0 : 1,
      last_error: w.lastError ?? null,
      now: this.#now().toISOString(),
    });
    if (!r) throw new StoreError('not_found', `no VM with id ${id}`);
    return toVm(r);
  }

  /** A boot: boot_count + 1, last_started_at = updated_at = now. Throws 'not_found'. */
  recordBoot(id: string): VmRow {
    const r = this.#recordBoot.get({ id, now: this.#now().toISOString() });
    if (!r) throw new StoreError('not_found', `no VM with id ${id}`);
    return toVm(r);
  }

  /** Returns false if there was no such VM. */
  delete(id: string): boolean {
    return Number(this.#delete.run(id).changes) > 0;
  }

  /**
   * The lowest host address in `cidr` that no VM holds and that is not in `reserved` (e.g. the
   * gateway). Throws StoreError 'exhausted' when the network is full, RangeError for a bad CIDR.
   * Not a reservation: call it and insert/update in one store.transaction(), or retry on a
   * UNIQUE violation of 'vms.guest_ip'.
   */
  nextFreeGuestIp(cidr: string, reserved: Iterable<string> = []): string {
    const taken = [...reserved, ...this.#guestIps.all().map((r) => str(r, 'vms', 'guest_ip'))];
    const ip = firstFreeHost(cidr, taken);
    if (ip === undefined) throw new StoreError('exhausted', `no free guest address left in ${cidr}`);
    return ip;
  }
}
