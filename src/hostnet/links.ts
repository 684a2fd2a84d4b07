// Bridges and taps through iproute2: state is read with `ip -json` and parsed defensively;
// changes are single `ip` invocations by argv. Every method is idempotent ("ensure"), so a retry
// or a crash-recovery pass is safe.
import { DEFAULT_TOOLS, execRunner, HostnetError, parseJsonOutput, type Runner } from './exec.ts';
import { parseCidr } from './ipv4.ts';
import { isBangerBridge, isBangerTap } from './names.ts';

export interface BridgeState {
  name: string;
  up: boolean;
  /** IPv4 interface addresses, "A.B.C.D/N". */
  addresses: string[];
}

export interface TapState {
  name: string;
  up: boolean;
  /** The bridge it is enslaved to, if any. */
  master?: string;
  /** Owner uid of the persistent tap (who may open it). */
  ownerUid?: number;
}

export interface Links {
  /** Bridge `name` exists, is up and carries exactly the IPv4 address `address` ("A.B.C.D/N"). */
  ensureBridge(name: string, address: string): Promise<{ created: boolean; changed: boolean }>;
  /** Persistent tap `name`, owned by ownerUid, enslaved to bridge, up. */
  createTap(name: string, bridge: string, ownerUid: number): Promise<{ created: boolean }>;
  /** Remove tap `name` if present. */
  deleteTap(name: string): Promise<{ deleted: boolean }>;
  /** Remove bridge `name` if present (uninstall --purge). */
  deleteBridge(name: string): Promise<{ deleted: boolean }>;
  /** Banger's bridges (by name prefix) on this host. */
  listBridges(): Promise<BridgeState[]>;
  /** Banger's taps (by name prefix) on this host. */
  listTaps(): Promise<TapState[]>;
}

/** One link of `ip -json -d link show`, reduced to what banger reads. */
export interface LinkInfo {
  name: string;
  kind: string | undefined;
  /** "tap" / "tun" for tun devices. */
  tunType: string | undefined;
  master: string | undefined;
  up: boolean;
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

/** Parse `ip -json -d link show`. Entries without a usable name are dropped. */
export function parseLinks(json: unknown): LinkInfo[] {
  if (!Array.isArray(json)) throw new HostnetError('list_links', 'ip -json link show did not print an array');
  const out: LinkInfo[] = [];
  for (const raw of json) {
    const l = obj(raw);
    if (!l || typeof l.ifname !== 'string' || l.ifname.length === 0 || l.ifname.length > 15) continue;
    const info = obj(l.linkinfo);
    const data = obj(info?.info_data);
    const flags = Array.isArray(l.flags) ? l.flags.filter((f): f is string => typeof f === 'string') : [];
    out.push({
      name: l.ifname,
      kind: typeof info?.info_kind === 'string' ? info.info_kind : undefined,
      tunType: typeof data?.type === 'string' ? data.type : undefined,
      master: typeof l.master === 'string' ? l.master : undefined,
      up: flags.includes('UP'),
    });
  }
  return out;
}

/** Parse `ip -json addr show`: link name → its IPv4 "A.B.C.D/N" addresses. */
export function parseAddrs(json: unknown): Map<string, string[]> {
  if (!Array.isArray(json)) throw new HostnetError('list_addrs', 'ip -json addr show did not print an array');
  const out = new Map<string, string[]>();
  for (const raw of json) {
    const l = obj(raw);
    if (!l || typeof l.ifname !== 'string') continue;
    const addrs: string[] = [];
    for (const a of Array.isArray(l.addr_info) ? l.addr_info : []) {
      const ai = obj(a);
      if (ai?.family !== 'inet' || typeof ai.local !== 'string' || typeof ai.prefixlen !== 'number') continue;
      const cidr = `${ai.local}/${ai.prefixlen}`;
      try {
        parseCidr(cidr);
        addrs.push(cidr);
      } catch {
        // not an address we can read: ignore it rather than trust it
      }
    }
    out.set(l.ifname, addrs);
  }
  return out;
}

/** Parse `ip -json tuntap show`: tap name → owner uid (when the device has one). */
export function parseTunOwners(json: unknown): Map<string, number> {
  if (!Array.isArray(json))
    throw new HostnetError('list_taps', 'ip -json tuntap show did not print an array');
  const out = new Map<string, number>();
  for (const raw of json) {
    const t = obj(raw);
    if (!t || typeof t.ifname !== 'string') continue;
    if (typeof t.user === 'number' && Number.isInteger(t.user) && t.user >= 0) out.set(t.ifname, t.user);
  }
  return out;
}

export class IpLinks implements Links {
  private readonly run: Runner;
  private readonly ip: string;

  constructor(opts: { runner?: Runner; ipPath?: string } = {}) {
    this.run = opts.runner ?? execRunner;
    this.ip = opts.ipPath ?? DEFAULT_TOOLS.ip;
  }

  private async ipc(op: string, args: string[]): Promise<string> {
    try {
      return await this.run(this.ip, args);
    } catch (err) {
      throw new HostnetError(op, err instanceof Error ? err.message : String(err), { cause: err });
    }
  }

  async links(op = 'list_links'): Promise<LinkInfo[]> {
    return parseLinks(parseJsonOutput(op, 'ip link', await this.ipc(op, ['-json', '-d', 'link', 'show'])));
  }

  private async addrs(op: string, dev: string): Promise<string[]> {
    const out = await this.ipc(op, ['-json', 'addr', 'show', 'dev', dev]);
    return parseAddrs(parseJsonOutput(op, 'ip addr', out)).get(dev) ?? [];
  }

  private async tunOwners(op: string): Promise<Map<string, number>> {
    return parseTunOwners(parseJsonOutput(op, 'ip tuntap', await this.ipc(op, ['-json', 'tuntap', 'show'])));
  }

  async ensureBridge(name: string, address: string): Promise<{ created: boolean; changed: boolean }> {
    const op = 'ensure_bridge';
    if (!isBangerBridge(name)) throw new HostnetError(op, `refusing a bridge not named by banger: ${name}`);
    const want = parseCidr(address);
    let created = false;
    let changed = false;
    const cur = (await this.links(op)).find((l) => l.name === name);
    if (cur && cur.kind !== 'bridge') {
      throw new HostnetError(op, `${name} exists but is a ${cur.kind ?? 'plain'} link, not a bridge`);
    }
    if (!cur) {
      await this.ipc(op, ['link', 'add', 'name', name, 'type', 'bridge']);
      created = true;
    }
    let have = false;
    for (const a of await this.addrs(op, name)) {
      const c = parseCidr(a);
      if (c.addr === want.addr && c.prefix === want.prefix) have = true;
      else {
        // The bridge is banger's: an address it no longer wants (the pool changed) goes.
        await this.ipc(op, ['addr', 'del', a, 'dev', name]);
        changed = true;
      }
    }
    if (!have) {
      await this.ipc(op, ['addr', 'add', address, 'dev', name]);
      changed = true;
    }
    if (!cur?.up) {
      await this.ipc(op, ['link', 'set', 'dev', name, 'up']);
      changed = true;
    }
    return { created, changed: changed || created };
  }

  async createTap(name: string, bridge: string, ownerUid: number): Promise<{ created: boolean }> {
    const op = 'create_tap';
    if (!isBangerTap(name)) throw new HostnetError(op, `refusing a tap not named by banger: ${name}`);
    if (!isBangerBridge(bridge))
      throw new HostnetError(op, `refusing a bridge not named by banger: ${bridge}`);
    const all = await this.links(op);
    const br = all.find((l) => l.name === bridge);
    if (!br || br.kind !== 'bridge') throw new HostnetError(op, `bridge ${bridge} does not exist`);
    let cur = all.find((l) => l.name === name);
    if (cur) {
      const owner = (await this.tunOwners(op)).get(name);
      if (cur.kind !== 'tun' || cur.tunType !== 'tap' || owner !== ownerUid) {
        // Ours by name but not what we want (left by a crash or another owner): recreate it.
        await this.ipc(op, ['link', 'del', 'dev', name]);
        cur = undefined;
      }
    }
    const created = !cur;
    if (!cur) {
      await this.ipc(op, ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(ownerUid)]);
    }
    if (cur?.master !== bridge) await this.ipc(op, ['link', 'set', 'dev', name, 'master', bridge]);
    if (!cur?.up) await this.ipc(op, ['link', 'set', 'dev', name, 'up']);
    return { created };
  }

  async deleteTap(name: string): Promise<{ deleted: boolean }> {
    const op = 'delete_tap';
    if (!isBangerTap(name)) throw new HostnetError(op, `refusing a tap not named by banger: ${name}`);
    if (!(await this.links(op)).some((l) => l.name === name)) return { deleted: false };
    await this.ipc(op, ['link', 'del', 'dev', name]);
    return { deleted: true };
  }

  async deleteBridge(name: string): Promise<{ deleted: boolean }> {
    const op = 'delete_bridge';
    if (!isBangerBridge(name)) throw new HostnetError(op, `refusing a bridge not named by banger: ${name}`);
    const cur = (await this.links(op)).find((l) => l.name === name);
    if (!cur) return { deleted: false };
    if (cur.kind !== 'bridge') throw new HostnetError(op, `${name} is not a bridge; leaving it alone`);
    await this.ipc(op, ['link', 'del', 'dev', name]);
    return { deleted: true };
  }

  async listBridges(): Promise<BridgeState[]> {
    const op = 'list_owned';
    const bridges = (await this.links(op)).filter((l) => l.kind === 'bridge' && isBangerBridge(l.name));
    if (bridges.length === 0) return [];
    const addrs = parseAddrs(parseJsonOutput(op, 'ip addr', await this.ipc(op, ['-json', 'addr', 'show'])));
    return bridges.map((b) => ({ name: b.name, up: b.up, addresses: addrs.get(b.name) ?? [] }));
  }

  async listTaps(): Promise<TapState[]> {
    const op = 'list_owned';
    const taps = (await this.links(op)).filter((l) => isBangerTap(l.name));
    if (taps.length === 0) return [];
    const owners = await this.tunOwners(op);
    return taps.map((t) => {
      const s: TapState = { name: t.name, up: t.up };
      if (t.master !== undefined) s.master = t.master;
      const o = owners.get(t.name);
      if (o !== undefined) s.ownerUid = o;
      return s;
    });
  }
}
