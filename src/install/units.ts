// The two systemd units of a system install, rendered from a few facts. Pure: the unit files are
// tested by content (and with `systemd-analyze verify` where it exists).
//
// bangerd.service runs as the owner, never root. bangerd-root.service is root, but boxed in: no
// new privileges, read-only system, a capability bounding set of exactly what bridges, taps, NAT
// and chowning its socket need. Both use KillMode=process: restarting either never kills a VM
// (VMMs are the daemon's children; they must outlive it).

export const DAEMON_UNIT = 'bangerd.service';
export const HELPER_UNIT = 'bangerd-root.service';
export const SYSTEM_DAEMON_SOCKET = '/run/banger/bangerd.sock';
export const SYSTEM_HELPER_SOCKET = '/run/banger-root/bangerd-root.sock';
export const SYSTEM_STATE_DIR = '/var/lib/banger';
export const SYSTEM_CACHE_DIR = '/var/cache/banger';
export const SYSTEM_CONFIG = '/etc/banger/config.toml';
export const INSTALL_TOML_PATH = '/etc/banger/install.toml';
export const UNIT_DIR = '/etc/systemd/system';

export interface UnitFacts {
  /** Absolute directory holding bangerd and bangerd-root (the checkout's bin/). */
  binDir: string;
  owner: string;
  ownerGroup: string;
  ownerUid: number;
  /** Address pool the helper accepts (bangerd-root --pool). */
  pool: string;
}

/** A value safe to put on a unit's ExecStart= line unquoted (absolute path, no specials). */
function checkPath(p: string): string {
  if (!/^\/[A-Za-z0-9._+\-/]*$/.test(p))
    throw new Error(`unsupported path for a unit file: ${JSON.stringify(p)}`);
  return p;
}

function checkName(n: string, what: string): string {
  if (!/^[a-z_][a-z0-9_-]{0,31}\$?$/.test(n)) throw new Error(`unsupported ${what}: ${JSON.stringify(n)}`);
  return n;
}

export function helperUnit(f: UnitFacts): string {
  return `# Written by banger system install. bangerd-root: banger's narrow root helper (bridge, taps,
# NAT, resolver routing). It serves only uid ${f.ownerUid} (${f.owner}) and root.
[Unit]
Description=banger root helper (bangerd-root)
Documentation=file://${checkPath(f.binDir)}/../docs/networking.md
Before=${DAEMON_UNIT}

[Service]
Type=simple
ExecStart=${checkPath(f.binDir)}/bangerd-root --socket ${SYSTEM_HELPER_SOCKET} --owner-uid ${f.ownerUid} --pool ${f.pool}
Restart=on-failure
RestartSec=2
KillMode=process
RuntimeDirectory=banger-root
RuntimeDirectoryMode=0711
RuntimeDirectoryPreserve=yes
UMask=0077

# Hardening. Only what iproute2/nftables (CAP_NET_ADMIN), handing the socket to the owner
# (CAP_CHOWN) and reading egress denials from the kernel log (/dev/kmsg, read-only; CAP_SYSLOG
# under kernel.dmesg_restrict; so no ProtectKernelLogs) need. /proc/sys stays writable (no
# ProtectKernelTunables): NAT turns on net.ipv4.ip_forward. MemoryDenyWriteExecute is off:
# Node's JIT needs it.
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_NET_ADMIN CAP_CHOWN CAP_SYSLOG
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
DeviceAllow=/dev/kmsg r
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
`;
}

export function daemonUnit(f: UnitFacts): string {
  return `# Written by banger system install. bangerd: banger's daemon, run as ${f.owner} (never root).
[Unit]
Description=banger daemon (bangerd)
Documentation=file://${checkPath(f.binDir)}/../README.md
Wants=${HELPER_UNIT}
After=${HELPER_UNIT} network.target

[Service]
Type=simple
User=${checkName(f.owner, 'owner')}
Group=${checkName(f.ownerGroup, 'group')}
ExecStart=${checkPath(f.binDir)}/bangerd --socket ${SYSTEM_DAEMON_SOCKET} --state-dir ${SYSTEM_STATE_DIR} --config ${SYSTEM_CONFIG} --helper-socket ${SYSTEM_HELPER_SOCKET}
Restart=on-failure
RestartSec=2
# VMs are the daemon's children and must outlive it: a restart or stop kills only bangerd.
KillMode=process
RuntimeDirectory=banger
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
StateDirectory=banger
StateDirectoryMode=0700
CacheDirectory=banger
UMask=0077

NoNewPrivileges=yes
CapabilityBoundingSet=
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
`;
}

export function installToml(f: UnitFacts & { version: string; installedAt: string }): string {
  const q = (s: string): string => JSON.stringify(s);
  return `# Written by banger system install; bangerd-root reads owner_uid and network_pool.
owner = ${q(f.owner)}
owner_uid = ${f.ownerUid}
network_pool = ${q(f.pool)}
bin_dir = ${q(f.binDir)}
version = ${q(f.version)}
installed_at = ${q(f.installedAt)}
`;
}

/** The daemon config a fresh system install starts with (never overwritten afterwards). */
export function defaultSystemConfig(): string {
  return `# bangerd configuration (system install). Every key is optional; see docs/networking.md.
network = "auto"
image_cache_dir = "${SYSTEM_CACHE_DIR}"
bridge_name = "br-banger"
bridge_cidr = "10.213.0.0/24"
dns_port = 5354
`;
}
