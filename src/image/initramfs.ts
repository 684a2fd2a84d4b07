// A small initramfs: static busybox, the virtio modules the Debian kernel builds as modules (in
// dependency order, from modules.dep), and an /init that finds the root filesystem by label.
// microvm's virtio-mmio enumeration can put another disk at /dev/vda, so nothing assumes a name.
import { chmod, copyFile, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { createReadStream, createWriteStream } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { run } from './exec.ts';

/** modules.dep: module path (relative to /lib/modules/VERSION) → its dependencies' paths. */
export type ModulesDep = Map<string, string[]>;

export function parseModulesDep(text: string): ModulesDep {
  const deps: ModulesDep = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const mod = line.slice(0, colon).trim();
    const rest = line.slice(colon + 1).trim();
    deps.set(mod, rest ? rest.split(/\s+/) : []);
  }
  return deps;
}

/** `kernel/drivers/block/virtio_blk.ko.xz` → `virtio_blk` (dashes normalised to underscores). */
export function moduleName(path: string): string {
  return basename(path)
    .replace(/\.ko(\.(xz|zst|gz))?$/, '')
    .replaceAll('-', '_');
}

/** modules.builtin lists paths of modules built into the kernel. */
export function parseModulesBuiltin(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) if (line.trim()) names.add(moduleName(line.trim()));
  return names;
}

export interface ModuleOrder {
  /** Module paths in load order: every module after all of its dependencies. */
  order: string[];
  /** Wanted names built into the kernel (nothing to load). */
  builtin: string[];
  /** Wanted names neither available as a module nor built in. */
  missing: string[];
}

/**
 * Load order for `wanted` (module names) and their dependencies: depth-first through each
 * module's own modules.dep line, walking a line from its end as modprobe does, so every module
 * comes after its dependencies and appears once.
 */
export function resolveModuleOrder(dep: ModulesDep, builtin: Set<string>, wanted: string[]): ModuleOrder {
  const byName = new Map<string, string>();
  for (const path of dep.keys()) byName.set(moduleName(path), path);
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const result: ModuleOrder = { order, builtin: [], missing: [] };

  const visit = (path: string): void => {
    if (done.has(path) || visiting.has(path)) return; // visiting: a cycle; depmod rejects those anyway
    visiting.add(path);
    // depmod lists the dependency to load first last (modprobe walks the line backwards).
    for (const d of [...(dep.get(path) ?? [])].reverse()) visit(d);
    visiting.delete(path);
    done.add(path);
    order.push(path);
  };
  for (const raw of wanted) {
    const name = raw.replaceAll('-', '_');
    const path = byName.get(name);
    if (path !== undefined) visit(path);
    else if (builtin.has(name)) result.builtin.push(name);
    else result.missing.push(name);
  }
  return result;
}

/**
 * Shell functions of /init for a static `ip=` (dracut form
 * `CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF[:DNS...]`, AUTOCONF off or none): the
 * address, link and default route are set before PID 1 starts, so the guest answers on the
 * network as soon as a service listens, without waiting for systemd-networkd (about 2 s to start
 * under TCG). networkd later applies the same settings (systemd-network-generator turns the same
 * `ip=` into a .network file) and keeps them. Anything else (dhcp, IPv6, a bad value) is left to
 * networkd. Uses busybox ip; `say` is /init's logger.
 */
export const INIT_NETCONF_SH = `mask2prefix() {
	case "$1" in
	*.*) ;;
	*)
		[ "$1" -ge 0 ] 2>/dev/null && [ "$1" -le 32 ] && echo "$1"
		return
		;;
	esac
	local IFS=. n=0 o rest=0
	for o in $1; do
		# Once an octet is not 255, every later one must be 0 (a contiguous mask).
		[ "$rest" = 1 ] && [ "$o" != 0 ] && return 1
		[ "$o" = 255 ] || rest=1
		case "$o" in
		255) n=$((n + 8)) ;;
		254) n=$((n + 7)) ;;
		252) n=$((n + 6)) ;;
		248) n=$((n + 5)) ;;
		240) n=$((n + 4)) ;;
		224) n=$((n + 3)) ;;
		192) n=$((n + 2)) ;;
		128) n=$((n + 1)) ;;
		0) ;;
		*) return 1 ;;
		esac
	done
	echo "$n"
}

netconf() {
	local IFS=: client gw mask dev auto prefix
	set -- $1
	client=$1 gw=$3 mask=$4 dev=\${6:-eth0} auto=\${7:-off}
	case "$auto" in off | none) ;; *) return 0 ;; esac
	case "$client" in *.*.*.*) ;; *) return 0 ;; esac
	if ! prefix=$(mask2prefix "$mask") || [ -z "$prefix" ]; then
		say "warning: ip=: bad netmask '$mask'; leaving $dev to systemd-networkd"
		return 0
	fi
	ip link set lo up 2>/dev/null
	if ! ip addr add "$client/$prefix" dev "$dev"; then
		say "warning: ip=: cannot set $client/$prefix on $dev; leaving it to systemd-networkd"
		return 0
	fi
	ip link set "$dev" up || say "warning: ip=: cannot bring $dev up"
	if [ -n "$gw" ]; then
		ip route add default via "$gw" dev "$dev" proto static || say "warning: ip=: no default route via $gw"
	fi
}
`;

/** Label of the prepare disk (src/image/prepare.ts) that `banger.prepare` boots look for. */
export const PREP_LABEL = 'banger-prep';
/** The console line that ends a prepare boot: the exit status of prepare.sh. */
export const PREPARE_EXIT_MARKER = 'banger-prepare-exit=';

/**
 * Shell function of /init for `banger.prepare` (src/image/prepare.ts): with the root filesystem
 * mounted read-write on /newroot and the network configured from ip=, mount the prepare disk
 * (label PREP_LABEL), give the root filesystem proc, sys, dev, dev/pts, a tmpfs /run and /tmp
 * and the disk at /.banger-prep, put the disk's resolv.conf in place (the original is moved
 * aside and put back after), run the disk's prepare.sh chrooted into /newroot with its output
 * on the console (BANGER_PREP_ROOTDEV names the root device, for resize2fs), then unmount everything, print `banger-prepare-exit=<status>` as the last line
 * and power off. Never returns. `say` and `fail` are /init's.
 */
export function initPrepareSh(prepLabel = PREP_LABEL): string {
  return `prepare_run() {
	[ "$mode" = rw ] || fail "banger.prepare needs the root filesystem read-write (rw)"
	local pdev= i=0 d rc resolv=0 m
	while [ $i -lt 100 ]; do
		pdev=$(findfs LABEL=${prepLabel} 2>/dev/null) && [ -n "$pdev" ] && break
		pdev=
		i=$((i + 1))
		usleep 100000
	done
	[ -n "$pdev" ] || fail "prepare disk LABEL=${prepLabel} not found after 10 s"
	mkdir -p /prep
	mount -t ext4 -o rw,nosuid,nodev "$pdev" /prep || fail "cannot mount the prepare disk $pdev"
	[ -f /prep/prepare.sh ] || fail "no prepare.sh on the prepare disk"
	# A symlink here would be followed in the initramfs, outside the root filesystem.
	for d in proc sys dev run tmp .banger-prep; do
		[ -L "/newroot/$d" ] && fail "/$d is a symlink in the root filesystem"
		mkdir -p "/newroot/$d" || fail "cannot create /$d in the root filesystem"
	done
	mount -t proc -o nosuid,nodev,noexec proc /newroot/proc || fail "cannot mount /proc"
	mount -t sysfs -o nosuid,nodev,noexec sysfs /newroot/sys || fail "cannot mount /sys"
	mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /newroot/dev || fail "cannot mount /dev"
	mkdir -p /newroot/dev/pts
	mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /newroot/dev/pts || say "warning: no /dev/pts"
	mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /newroot/run || fail "cannot mount /run"
	mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /newroot/tmp || fail "cannot mount /tmp"
	mount --bind /prep /newroot/.banger-prep || fail "cannot bind the prepare disk"
	if [ -f /prep/resolv.conf ]; then
		# mv, not cp: the image's resolv.conf may be a symlink (into /run, say) that cp would follow.
		if [ -e /newroot/etc/resolv.conf ] || [ -L /newroot/etc/resolv.conf ]; then
			mv /newroot/etc/resolv.conf /newroot/etc/resolv.conf.banger-prep && resolv=2
		else
			resolv=1
		fi
		cat /prep/resolv.conf > /newroot/etc/resolv.conf
	fi
	say "prepare: running prepare.sh"
	/bin/busybox env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \\
		TERM=dumb LANG=C DEBIAN_FRONTEND=noninteractive BANGER_PREP_ROOTDEV="$dev" \\
		/bin/busybox chroot /newroot /bin/sh /.banger-prep/prepare.sh </dev/null 2>&1
	rc=$?
	if [ "$resolv" != 0 ]; then
		rm -f /newroot/etc/resolv.conf
		[ "$resolv" = 2 ] && mv /newroot/etc/resolv.conf.banger-prep /newroot/etc/resolv.conf
	fi
	# Whatever prepare.sh left running (a daemon a postinst started) must not hold the mounts.
	kill -TERM -1 2>/dev/null
	sleep 1
	kill -KILL -1 2>/dev/null
	sync
	for m in .banger-prep tmp run dev/pts dev sys proc; do
		umount "/newroot/$m" 2>/dev/null || umount -l "/newroot/$m" 2>/dev/null
	done
	umount /prep
	if ! mount -o remount,ro /newroot || ! umount /newroot; then
		say "prepare: cannot unmount the root filesystem cleanly"
		[ "$rc" = 0 ] && rc=125
	fi
	sync
	echo "${PREPARE_EXIT_MARKER}$rc"
	poweroff -f
	exit 1
}
`;
}

export interface InitScriptOptions {
  /** Module file names under /lib/modules in the initramfs, in load order. */
  modules: string[];
  rootLabel: string;
  seedLabel: string;
}

/**
 * The initramfs /init (busybox sh). Kernel command line it understands:
 *   root=LABEL=x | root=UUID=x | root=/dev/x   (banger.root= takes precedence over root=)
 *   rootfstype= (ext4)  rootflags=  rw | ro  init= (/sbin/init)
 *   banger.rescue   drop to a shell on the console instead of failing
 *   banger.prepare  prepare mode (initPrepareSh): run the prepare disk's script in the root
 *                   filesystem and power off instead of booting it
 * Before switch_root it runs the root filesystem's /usr/lib/banger/banger-seed against the seed
 * disk (label seedLabel), so machine-id, hostname and SSH keys are in place before PID 1 starts.
 */
export function generateInitScript(opts: InitScriptOptions): string {
  const mods = opts.modules.join(' ');
  return `#!/bin/busybox sh
# banger initramfs /init (generated by src/image/initramfs.ts)
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /run /newroot /seed
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev

say() { echo "banger-initramfs: $*"; }
${INIT_NETCONF_SH}
${initPrepareSh()}
rescue=0
prepare=0
fail() {
	say "FATAL: $*"
	say "kernel command line: $(cat /proc/cmdline)"
	say "block devices:"
	cat /proc/partitions
	if [ "$rescue" = 1 ]; then
		say "banger.rescue given: starting a shell"
		exec sh
	fi
	say "giving up: powering off (add banger.rescue to the command line for a shell)"
	sleep 1
	# A clean power-off makes QEMU exit at once; exiting /init would panic and, under microvm,
	# does not always stop QEMU at the first reset.
	poweroff -f
	exit 1
}

for m in ${mods}; do
	insmod "/lib/modules/$m" 2>/dev/null || say "warning: cannot load $m"
done

root=
broot=
fstype=ext4
flags=
mode=ro
init=/sbin/init
ipconfs=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=*) root=\${arg#root=} ;;
	banger.root=*) broot=\${arg#banger.root=} ;;
	rootfstype=*) fstype=\${arg#rootfstype=} ;;
	rootflags=*) flags=\${arg#rootflags=} ;;
	init=*) init=\${arg#init=} ;;
	rw) mode=rw ;;
	ro) mode=ro ;;
	banger.rescue) rescue=1 ;;
	banger.prepare) prepare=1 ;;
	ip=*) ipconfs="$ipconfs \${arg#ip=}" ;;
	esac
done
for c in $ipconfs; do netconf "$c"; done
[ -n "$broot" ] && root=$broot
[ -n "$root" ] || root=LABEL=${opts.rootLabel}

resolve() {
	case "$1" in
	LABEL=* | UUID=*) findfs "$1" 2>/dev/null ;;
	/dev/*) [ -b "$1" ] && echo "$1" ;;
	*) return 1 ;;
	esac
}

dev=
i=0
while [ $i -lt 100 ]; do
	dev=$(resolve "$root") && [ -n "$dev" ] && break
	dev=
	i=$((i + 1))
	usleep 100000
done
[ -n "$dev" ] || fail "root device $root not found after 10 s"

mount -t "$fstype" -o "$mode\${flags:+,$flags}" "$dev" /newroot || fail "cannot mount $dev ($root) on /newroot"
[ "$prepare" = 1 ] && prepare_run
[ -L "/newroot$init" ] || [ -x "/newroot$init" ] || fail "no $init on $dev"

# Apply the seed now (keys, hostname, machine-id, files): PID 1 reads machine-id and hostname
# before any unit could. The root filesystem's own banger-seed script does the work.
seedscript=/newroot/usr/lib/banger/banger-seed
if [ "$mode" = rw ] && [ -f "$seedscript" ] && seed=$(findfs LABEL=${opts.seedLabel} 2>/dev/null) && [ -n "$seed" ]; then
	if mount -t ext4 -o ro,nosuid,nodev,noexec "$seed" /seed; then
		BANGER_SEED_ROOT=/newroot BANGER_SEED_MOUNT=/seed sh "$seedscript" || say "warning: seed script failed"
		umount /seed
	else
		say "warning: cannot mount the seed disk $seed"
	fi
fi

mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot "$init"
`;
}

export interface BuildInitramfsOptions {
  /** Root of the extracted kernel package (holds lib/modules/VERSION with modules.dep). */
  kernelRoot: string;
  kernelVersion: string;
  /** Path of a static busybox binary. */
  busybox: string;
  wantedModules: string[];
  requiredModules: string[];
  rootLabel: string;
  seedLabel: string;
  /** Scratch directory (the tree is assembled here). */
  workDir: string;
  /** Output: gzip-compressed newc cpio. */
  out: string;
  signal?: AbortSignal;
}

export interface InitramfsResult {
  path: string;
  size: number;
  modules: string[];
  builtin: string[];
  missing: string[];
}

export async function buildInitramfs(o: BuildInitramfsOptions): Promise<InitramfsResult> {
  const modRoot = join(o.kernelRoot, 'lib', 'modules', o.kernelVersion);
  const dep = parseModulesDep(await readFile(join(modRoot, 'modules.dep'), 'utf8'));
  const builtin = parseModulesBuiltin(
    await readFile(join(modRoot, 'modules.builtin'), 'utf8').catch(() => ''),
  );
  const resolved = resolveModuleOrder(dep, builtin, o.wantedModules);
  const missingRequired = o.requiredModules.filter((m) => resolved.missing.includes(m.replaceAll('-', '_')));
  if (missingRequired.length > 0) {
    throw new Error(
      `kernel ${o.kernelVersion} has neither module nor built-in: ${missingRequired.join(', ')}`,
    );
  }

  const tree = join(o.workDir, 'initramfs');
  await mkdir(join(tree, 'bin'), { recursive: true });
  await mkdir(join(tree, 'lib', 'modules'), { recursive: true });
  await copyFile(o.busybox, join(tree, 'bin', 'busybox'));
  await chmod(join(tree, 'bin', 'busybox'), 0o755);

  const files: string[] = [];
  for (const path of resolved.order) {
    const src = join(modRoot, path);
    const name = `${moduleName(path)}.ko`;
    const dest = join(tree, 'lib', 'modules', name);
    // busybox insmod takes plain .ko files only.
    if (path.endsWith('.ko.xz')) await run(['xz', '-dc', src], { stdoutFile: dest, signal: o.signal });
    else if (path.endsWith('.ko.zst'))
      await run(['zstd', '-dcq', src], { stdoutFile: dest, signal: o.signal });
    else if (path.endsWith('.ko.gz')) await run(['gzip', '-dc', src], { stdoutFile: dest, signal: o.signal });
    else await copyFile(src, dest);
    files.push(name);
  }
  await writeFile(
    join(tree, 'init'),
    generateInitScript({ modules: files, rootLabel: o.rootLabel, seedLabel: o.seedLabel }),
    { mode: 0o755 },
  );
  await chmod(join(tree, 'init'), 0o755);

  const list = (await listTree(tree)).join('\n') + '\n';
  const cpioPath = join(o.workDir, 'initrd.cpio');
  // -R 0:0: every entry owned by root whoever builds it. /dev/console comes from the kernel's
  // built-in initramfs, which is unpacked first.
  await run(['cpio', '--quiet', '-o', '-H', 'newc', '-R', '0:0', '--reproducible'], {
    cwd: tree,
    input: list,
    stdoutFile: cpioPath,
    signal: o.signal,
  });
  await pipeline(createReadStream(cpioPath), createGzip({ level: 9 }), createWriteStream(o.out));
  const size = (await stat(o.out)).size;
  return { path: o.out, size, modules: files, builtin: resolved.builtin, missing: resolved.missing };
}

/** Paths under root, relative and sorted ("." first), directories before their contents. */
async function listTree(root: string): Promise<string[]> {
  const out: string[] = ['.'];
  const walk = async (dir: string): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const full = join(dir, e.name);
      out.push(`./${relative(root, full)}`);
      if (e.isDirectory()) await walk(full);
    }
  };
  await walk(root);
  return out;
}
