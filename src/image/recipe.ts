// The default guest image as data, and the cache key derived from it. Everything that changes
// the bytes of a built image belongs in recipeHash(): the recipe, the guest/ files, the generated
// /init and customize script, and BUILDER_VERSION (bump it when builder code changes the output
// in a way the generated scripts do not show).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateInitScript } from './initramfs.ts';
import { generateCustomizeScript } from './rootfs.ts';

export const BUILDER_VERSION = '1';

/** One apt source, written as a one-line `deb` entry. */
export interface AptSource {
  uri: string;
  suite: string;
  components: string[];
}

/** A file from guest/ installed into the root filesystem. */
export interface GuestFile {
  /** Path relative to the guest/ directory. */
  src: string;
  /** Absolute path inside the guest. */
  dest: string;
  mode: number;
  /**
   * `freestanding-c`: src is C without libc (raw x86-64 system calls), compiled on the build
   * host with FREESTANDING_CC_ARGS into a tiny static executable that is installed at dest.
   */
  compile?: 'freestanding-c';
}

/** gcc arguments for a freestanding guest program (before `-o OUT SRC`); part of the recipe hash. */
export const FREESTANDING_CC_ARGS = [
  '-Os',
  '-static',
  '-nostdlib',
  '-fno-stack-protector',
  '-fno-builtin',
  '-fno-asynchronous-unwind-tables',
  '-s',
];

export interface ImageRecipe {
  name: string;
  suite: string;
  arch: 'amd64';
  sources: AptSource[];
  keyring: string;
  variant: 'minbase' | 'apt';
  packages: string[];
  /** Meta package that names the current kernel ABI package (resolved at build time). */
  kernelMetaPackage: string;
  busyboxPackage: string;
  /** Modules the initramfs loads (with their dependencies, from modules.dep). */
  initramfsModules: string[];
  /** Of those, the ones boot cannot do without (unless built into the kernel). */
  requiredModules: string[];
  /** Copy the kernel's /lib/modules tree into the root filesystem (overlay, nftables, ...). */
  installKernelModules: boolean;
  /** dpkg path-exclude / path-include patterns (kept in the image for later installs too). */
  dpkgPathExclude: string[];
  dpkgPathInclude: string[];
  enableUnits: string[];
  maskUnits: string[];
  /** systemd generators not to run at boot (each costs a process start before any unit). */
  maskGenerators: string[];
  /** A login prompt on ttyS0; off by default: boots faster, and root has no password anyway. */
  serialGetty: boolean;
  rootLabel: string;
  seedLabel: string;
  /** Size of rootfs.ext4 (sparse); VMs grow it with their qcow2 overlay. */
  rootfsSizeMiB: number;
  guestFiles: GuestFile[];
}

const DEBIAN = 'http://deb.debian.org/debian';
const DEBIAN_SECURITY = 'http://deb.debian.org/debian-security';

export const DEFAULT_RECIPE: ImageRecipe = {
  name: 'default',
  suite: 'bookworm',
  arch: 'amd64',
  sources: [
    { uri: DEBIAN, suite: 'bookworm', components: ['main'] },
    { uri: DEBIAN, suite: 'bookworm-updates', components: ['main'] },
    { uri: DEBIAN_SECURITY, suite: 'bookworm-security', components: ['main'] },
  ],
  keyring: '/usr/share/keyrings/debian-archive-keyring.gpg',
  variant: 'minbase',
  packages: [
    'systemd-sysv',
    'dbus',
    'udev',
    'kmod',
    'openssh-server',
    'iproute2',
    'ca-certificates',
    'git',
    'sudo',
    'curl',
    'procps',
    'qemu-guest-agent',
    'e2fsprogs',
  ],
  kernelMetaPackage: 'linux-image-cloud-amd64',
  busyboxPackage: 'busybox-static',
  initramfsModules: [
    // microvm and Firecracker put virtio devices on MMIO: no virtio_pci (three modules fewer to
    // load before the root filesystem mounts).
    'virtio_mmio',
    'virtio_blk',
    'virtio_net',
    'virtio_console',
    'virtio_rng',
    'button',
    'evdev',
  ],
  requiredModules: ['virtio_mmio', 'virtio_blk'],
  installKernelModules: true,
  dpkgPathExclude: [
    '/usr/share/doc/*',
    '/usr/share/man/*',
    '/usr/share/info/*',
    '/usr/share/locale/*',
    '/usr/share/lintian/*',
    '/usr/share/linda/*',
  ],
  dpkgPathInclude: ['/usr/share/doc/*/copyright', '/usr/share/locale/locale.alias'],
  enableUnits: [
    'systemd-networkd.service',
    'systemd-network-generator.service',
    'banger-seed.service',
    'banger-growfs.service',
    'banger-ready.service',
    'banger-agent.service',
  ],
  maskUnits: [
    'getty@tty1.service',
    'systemd-networkd-wait-online.service',
    'apt-daily.timer',
    'apt-daily-upgrade.timer',
    'dpkg-db-backup.timer',
    'e2scrub_all.timer',
    'e2scrub_reap.service',
    'fstrim.timer',
    // Boot work a microVM sandbox has no use for (no GPU, no debugfs/tracefs users).
    'modprobe@drm.service',
    'sys-kernel-debug.mount',
    'sys-kernel-tracing.mount',
    // Boot-time work with nothing to do here, each on or beside the boot's critical path (see
    // docs/bench.md for what each saved): the initramfs already mounted / read-write with the
    // options fstab gives; no partitions to grow (repart's Wants= start modprobe@loop and
    // @dm_mod); no EFI pstore (pstore's Wants= starts modprobe@efi_pstore).
    'systemd-remount-fs.service',
    'systemd-repart.service',
    'systemd-pstore.service',
  ],
  // No encrypted, integrity or verity volumes, GPT auto-mounts, hibernation, offline updates or
  // SysV init scripts without a native unit in the sandbox image. Kept: fstab, getty (serial
  // console login when enabled), debug (systemd.mask= etc. on the command line), run, rc-local.
  maskGenerators: [
    'systemd-cryptsetup-generator',
    'systemd-gpt-auto-generator',
    'systemd-hibernate-resume-generator',
    'systemd-integritysetup-generator',
    'systemd-veritysetup-generator',
    'systemd-system-update-generator',
    'systemd-sysv-generator',
  ],
  serialGetty: false,
  rootLabel: 'banger-root',
  seedLabel: 'banger-seed',
  rootfsSizeMiB: 2048,
  guestFiles: [
    { src: 'bin/banger-seed', dest: '/usr/lib/banger/banger-seed', mode: 0o755 },
    { src: 'bin/banger-agent', dest: '/usr/lib/banger/banger-agent', mode: 0o755 },
    { src: 'bin/banger-growfs', dest: '/usr/lib/banger/banger-growfs', mode: 0o755 },
    // Clock and CRNG reseed of a warm clone (guest/bin/banger-reidentify runs it).
    {
      src: 'src/banger-reseed.c',
      dest: '/usr/lib/banger/banger-reseed',
      mode: 0o755,
      compile: 'freestanding-c',
    },
    { src: 'systemd/banger-seed.service', dest: '/etc/systemd/system/banger-seed.service', mode: 0o644 },
    { src: 'systemd/banger-agent.service', dest: '/etc/systemd/system/banger-agent.service', mode: 0o644 },
    { src: 'systemd/banger-ready.service', dest: '/etc/systemd/system/banger-ready.service', mode: 0o644 },
    { src: 'systemd/banger-growfs.service', dest: '/etc/systemd/system/banger-growfs.service', mode: 0o644 },
    { src: 'ssh/banger.conf', dest: '/etc/ssh/sshd_config.d/banger.conf', mode: 0o644 },
    // Replaces Debian's ssh.service: not ordered after network.target, no `sshd -t` pre-check.
    { src: 'systemd/ssh.service', dest: '/etc/systemd/system/ssh.service', mode: 0o644 },
    {
      src: 'network/99-banger-dhcp.network',
      dest: '/etc/systemd/network/99-banger-dhcp.network',
      mode: 0o644,
    },
    { src: 'etc/fstab', dest: '/etc/fstab', mode: 0o644 },
    // Update stamps newer than /usr (ConditionNeedsUpdate=): every package was configured at
    // build time, so a VM's first boot does not rerun systemd-sysusers and the like.
    { src: 'etc/updated', dest: '/etc/.updated', mode: 0o644 },
    { src: 'etc/updated', dest: '/var/.updated', mode: 0o644 },
  ],
};

/**
 * The guest/ directory: $BANGER_GUEST_DIR, else the nearest `guest/` above this module (the
 * checkout when run from src/, the package root when run from dist/src/).
 */
export function findGuestDir(): string {
  const fromEnv = process.env.BANGER_GUEST_DIR;
  if (fromEnv) return fromEnv;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'guest');
    if (existsSync(join(candidate, 'bin', 'banger-seed'))) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error('cannot find the guest/ directory (set BANGER_GUEST_DIR)');
}

/** JSON with object keys sorted at every level: the same data always hashes the same. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export interface RecipeHashOptions {
  guestDir?: string;
  builderVersion?: string;
}

/** sha256 (hex) over the recipe, the guest/ files it installs, generated scripts and builder version. */
export function recipeHash(recipe: ImageRecipe = DEFAULT_RECIPE, opts: RecipeHashOptions = {}): string {
  const guestDir = opts.guestDir ?? findGuestDir();
  const guestFiles = recipe.guestFiles.map((f) => ({
    dest: f.dest,
    mode: f.mode,
    sha256: createHash('sha256')
      .update(readFileSync(join(guestDir, f.src)))
      .digest('hex'),
  }));
  const material = {
    builder_version: opts.builderVersion ?? BUILDER_VERSION,
    freestanding_cc_args: FREESTANDING_CC_ARGS,
    recipe,
    guest_files: guestFiles,
    init: generateInitScript({
      modules: ['@MODULES@'],
      rootLabel: recipe.rootLabel,
      seedLabel: recipe.seedLabel,
    }),
    customize: generateCustomizeScript(recipe),
  };
  return createHash('sha256').update(canonicalJson(material)).digest('hex');
}

/** Lines for an apt sources.list, each with signed-by so no host keyring setup is needed. */
export function sourcesList(recipe: ImageRecipe): string {
  return recipe.sources
    .map((s) => `deb [signed-by=${recipe.keyring}] ${s.uri} ${s.suite} ${s.components.join(' ')}`)
    .join('\n')
    .concat('\n');
}
