// The pure half of preparing an image (src/image/prepare.ts boots it): what family an image is,
// what it lacks, and the prepare.sh that runs chrooted into it from banger's initramfs
// (`banger.prepare`, src/image/initramfs.ts). Debian/Ubuntu-family images get what banger's
// guest needs with their own apt; other families get an error that says what they need.
import { createHash } from 'node:crypto';

export interface OsRelease {
  id: string;
  idLike: string[];
  versionId?: string;
  prettyName?: string;
}

/** os-release(5): KEY=value lines, values optionally quoted. */
export function parseOsRelease(text: string): OsRelease {
  const kv = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(raw.trim());
    if (!m?.[1] || m[2] === undefined) continue;
    let v = m[2];
    const q = v[0];
    if ((q === '"' || q === "'") && v.endsWith(q) && v.length >= 2) v = v.slice(1, -1);
    kv.set(m[1], v.replace(/\\(["'$`\\])/g, '$1'));
  }
  const r: OsRelease = {
    id: (kv.get('ID') ?? 'linux').toLowerCase(),
    idLike: (kv.get('ID_LIKE') ?? '').toLowerCase().split(/\s+/).filter(Boolean),
  };
  const version = kv.get('VERSION_ID');
  if (version !== undefined) r.versionId = version;
  const pretty = kv.get('PRETTY_NAME');
  if (pretty !== undefined) r.prettyName = pretty;
  return r;
}

export type Family = 'debian' | 'unsupported';

/** Debian, Ubuntu and their derivatives (by ID or ID_LIKE) use apt and dpkg. */
export function familyOf(os: OsRelease): Family {
  const ids = [os.id, ...os.idLike];
  return ids.some((i) => i === 'debian' || i === 'ubuntu') ? 'debian' : 'unsupported';
}

/** What banger's guest needs of an image, by Debian package. */
export const BOOTABLE_PACKAGES = {
  /** PID 1 and the units banger's guest bits are written for; dbus for a clean ACPI power-off. */
  required: ['systemd-sysv', 'udev', 'dbus', 'openssh-server', 'iproute2', 'e2fsprogs'],
  /** Installed when the image's sources have it: warm starts re-identify clones through it. */
  optional: ['qemu-guest-agent'],
};

/** The message for an image banger cannot make bootable itself (docs/images.md, "Bootability"). */
export function unsupportedFamilyMessage(os: OsRelease): string {
  const name = os.prettyName ?? os.id;
  const ids = [os.id, ...os.idLike];
  const hint = ids.some((i) => ['fedora', 'rhel', 'centos', 'rocky', 'almalinux'].includes(i))
    ? 'dnf install systemd openssh-server iproute e2fsprogs dbus-broker qemu-guest-agent'
    : ids.some((i) => i.startsWith('opensuse') || i === 'suse' || i === 'sles')
      ? 'zypper install systemd openssh-server iproute2 e2fsprogs dbus-1 qemu-guest-agent'
      : ids.includes('arch')
        ? 'pacman -S systemd openssh iproute2 e2fsprogs dbus qemu-guest-agent'
        : ids.includes('alpine')
          ? 'Alpine has no systemd: banger’s guest units need it, so use a Debian or Ubuntu base'
          : 'the distribution’s packages for them';
  return (
    `image family ${os.id}${name !== os.id ? ` (${name})` : ''} is not supported: banger installs what ` +
    'its guest needs only in Debian/Ubuntu-family images (with apt). The image needs systemd as ' +
    '/sbin/init, udev, dbus, an OpenSSH server, iproute2, e2fsprogs and (for warm starts) ' +
    `qemu-guest-agent: ${hint}`
  );
}

/** Packages dpkg's status file says are installed ("install ok installed"). */
export function installedPackages(status: string): Set<string> {
  const out = new Set<string>();
  for (const stanza of status.split(/\n\s*\n/)) {
    const pkg = /^Package:\s*(\S+)/m.exec(stanza)?.[1];
    const st = /^Status:\s*(.+)$/m.exec(stanza)?.[1]?.trim();
    if (pkg && st?.endsWith(' installed') && !st.endsWith('not-installed')) out.add(pkg);
  }
  return out;
}

/** The wanted packages that are not installed, in the order wanted. */
export function missingPackages(installed: Set<string>, wanted: readonly string[]): string[] {
  return wanted.filter((p) => !installed.has(p));
}

/**
 * apt source lines for the prepare VM: loopback hosts (127.x, localhost, [::1]) become 10.0.2.2,
 * the host as QEMU's user-mode network shows it, so a repository served on the host's loopback is
 * reachable from the guest. One line per source; blank lines dropped.
 */
export function rewriteLoopbackSources(sources: string): string[] {
  return sources
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.replace(/:\/\/(?:127(?:\.\d{1,3}){3}|localhost|\[::1\])(?=[:/\s]|$)/gi, '://10.0.2.2'));
}

const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+(?::[a-z0-9]+)?(?:=[A-Za-z0-9.+~:-]+)?$/;

/** A Debian package name (optionally :arch and =version); anything else would reach a shell. */
export function checkPackageName(p: string): string {
  if (!PACKAGE_RE.test(p)) throw new Error(`not a package name: ${JSON.stringify(p)}`);
  return p;
}

export interface PrepareScriptOptions {
  /** Install these (missing required packages and the user's packages); fail if apt cannot. */
  install: string[];
  /** Install these when the sources have them (optional bootable packages). */
  optional?: string[];
  /** `[images] apt_sources`: replaces the image's own sources while the script runs. */
  aptSources?: string;
  /** Run /.banger-prep/customize.sh / (generateCustomizeScript: guest bits, units, identity). */
  customize: boolean;
  /** Run /.banger-prep/run-script as root in /root after the installs (a derived build's --run). */
  userScript: boolean;
  /** Grow the root filesystem to its disk first (a derived image's overlay is larger). */
  growRoot?: boolean;
}

/** The line prepare.sh prints with what apt installed (makeBootable reports it). */
export const INSTALLED_MARKER = 'banger-prepare: installed:';

/**
 * prepare.sh: POSIX sh, run by banger's initramfs as `chroot /newroot /bin/sh
 * /.banger-prep/prepare.sh` with network (10.0.2.15, DNS 10.0.2.3) and the prepare disk at
 * /.banger-prep. Daemons are kept from starting (policy-rc.d), docs and man pages are not
 * unpacked, the image's apt sources are put back and apt's lists removed however it ends.
 */
export function generatePrepareScript(o: PrepareScriptOptions): string {
  const install = o.install.map(checkPackageName);
  const optional = (o.optional ?? []).map(checkPackageName);
  const sources = o.aptSources !== undefined ? rewriteLoopbackSources(o.aptSources) : undefined;
  const needApt = install.length > 0 || optional.length > 0;
  const L: string[] = [
    '#!/bin/sh',
    '# banger prepare script (generated by src/image/prepare-script.ts); runs chrooted in the image.',
    'set -eu',
    'P=/.banger-prep',
    'log() { echo "banger-prepare: $*"; }',
    'policy=0 dpkgcfg=0 saved=0',
    'cleanup() {',
    '\trc=$?',
    '\tset +e',
    '\t[ "$policy" = 1 ] && rm -f /usr/sbin/policy-rc.d',
    '\t[ "$dpkgcfg" = 1 ] && rm -f /etc/dpkg/dpkg.cfg.d/banger-prepare',
    '\tif [ "$saved" = 1 ]; then',
    '\t\trm -f /etc/apt/sources.list.d/banger-prepare.list',
    '\t\t[ -e /etc/apt/banger-prep-saved/sources.list ] && mv /etc/apt/banger-prep-saved/sources.list /etc/apt/sources.list',
    '\t\tfor f in /etc/apt/banger-prep-saved/sources.list.d/* /etc/apt/banger-prep-saved/sources.list.d/.[!.]*; do',
    '\t\t\t[ -e "$f" ] || [ -L "$f" ] || continue',
    '\t\t\tmv "$f" /etc/apt/sources.list.d/',
    '\t\tdone',
    '\t\trm -rf /etc/apt/banger-prep-saved',
    '\tfi',
    '\tif command -v apt-get >/dev/null 2>&1; then',
    '\t\tapt-get clean >/dev/null 2>&1',
    '\t\trm -rf /var/lib/apt/lists/* 2>/dev/null',
    '\tfi',
    '\t# Identity is per VM: packages installed here may have made one.',
    '\t[ -e /etc/machine-id ] && : > /etc/machine-id',
    '\trm -f /etc/ssh/ssh_host_*',
    '\t# Every package was configured here: ConditionNeedsUpdate= units need not rerun at first boot.',
    '\tif [ "$rc" = 0 ]; then',
    '\t\tfor f in /etc/.updated /var/.updated; do [ -e "$f" ] && touch "$f"; done',
    '\tfi',
    "\t# Blocks freed here (apt lists, .debs) go back to the host: a derived image's overlay then",
    '\t# keeps only what it adds, and a raw image stays sparse (the disk has discard=unmap).',
    '\tcommand -v fstrim >/dev/null 2>&1 && fstrim / 2>/dev/null',
    '\tlog "exit $rc"',
    '\texit $rc',
    '}',
    'trap cleanup EXIT',
    '. /etc/os-release 2>/dev/null || . /usr/lib/os-release',
    'log "image: ${PRETTY_NAME:-$ID}"',
  ];
  if (o.growRoot) {
    L.push(
      'if [ -n "${BANGER_PREP_ROOTDEV:-}" ] && command -v resize2fs >/dev/null 2>&1; then',
      '\tlog "growing the root filesystem"',
      '\tresize2fs "$BANGER_PREP_ROOTDEV" 2>&1 || log "warning: cannot grow the root filesystem"',
      'fi',
    );
  }
  if (needApt) {
    L.push(
      'command -v apt-get >/dev/null 2>&1 || { log "no apt-get in this image"; exit 100; }',
      '# No daemon starts during installs (there is no init running to own it).',
      'if [ ! -e /usr/sbin/policy-rc.d ]; then',
      "\tprintf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d",
      '\tchmod 0755 /usr/sbin/policy-rc.d',
      '\tpolicy=1',
      'fi',
      'mkdir -p /etc/dpkg/dpkg.cfg.d',
      'cat > /etc/dpkg/dpkg.cfg.d/banger-prepare <<"EOF"',
      'path-exclude=/usr/share/doc/*',
      'path-include=/usr/share/doc/*/copyright',
      'path-exclude=/usr/share/man/*',
      'path-exclude=/usr/share/info/*',
      '# No fsync per unpacked file (slow on an emulated disk); the initramfs syncs at the end.',
      'force-unsafe-io',
      'EOF',
      'dpkgcfg=1',
    );
    if (sources !== undefined) {
      L.push(
        '# [images] apt_sources: the image’s own sources are moved aside and put back at exit.',
        'mkdir -p /etc/apt/banger-prep-saved/sources.list.d /etc/apt/sources.list.d',
        'saved=1',
        '[ -e /etc/apt/sources.list ] && mv /etc/apt/sources.list /etc/apt/banger-prep-saved/',
        'for f in /etc/apt/sources.list.d/* /etc/apt/sources.list.d/.[!.]*; do',
        '\t[ -e "$f" ] || [ -L "$f" ] || continue',
        '\tmv "$f" /etc/apt/banger-prep-saved/sources.list.d/',
        'done',
        "cat > /etc/apt/sources.list.d/banger-prepare.list <<'EOF'",
        ...sources,
        'EOF',
      );
    }
    L.push(
      'APT="apt-get -q -y -o APT::Install-Recommends=false -o Acquire::Languages=none -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o Dpkg::Use-Pty=0"',
      'log "apt-get update"',
      '$APT update',
      `want="${install.join(' ')}"`,
      `for p in ${optional.length > 0 ? optional.join(' ') : ''}; do`,
      '\tif apt-cache show --no-all-versions "$p" >/dev/null 2>&1; then want="$want $p"; else log "not available: $p"; fi',
      'done',
      'if [ -n "${want# }" ]; then',
      '\tlog "installing:$want"',
      '\t# Placeholder host keys: openssh-server would generate RSA, ECDSA and Ed25519 keys (seconds',
      '\t# under TCG) that cleanup deletes anyway; banger seeds one per VM.',
      '\tmkdir -p /etc/ssh',
      '\tfor t in rsa ecdsa ed25519; do',
      '\t\t[ -e /etc/ssh/ssh_host_${t}_key ] || echo banger-placeholder > /etc/ssh/ssh_host_${t}_key',
      '\tdone',
      '\t# shellcheck disable=SC2086 # a word list',
      '\t$APT install $want',
      'fi',
      `echo "${INSTALLED_MARKER}$want"`,
    );
  }
  if (o.customize) {
    L.push('log "installing banger guest files"', 'sh "$P/customize.sh" /');
  }
  if (o.userScript) {
    L.push(
      'log "running the build script"',
      'chmod 0755 "$P/run-script"',
      'cd /root 2>/dev/null || cd /',
      '# Its own interpreter when it names one (#!), else sh.',
      'if head -c 2 "$P/run-script" | grep -q "^#!"; then "$P/run-script"; else sh "$P/run-script"; fi',
      'cd /',
    );
  }
  L.push('log "done"');
  return L.join('\n') + '\n';
}

export interface DerivedKeyInput {
  /** The base image's identity: its OCI digest, else its recipe hash, else its id. */
  base: string;
  packages: readonly string[];
  /** The --run script's content ('' when none). */
  script: string;
}

/**
 * Cache key of a derived image: sha256 over the base's identity, the packages (sorted, deduped)
 * and the script. Two builds with the same key produce the same image.
 */
export function derivedCacheKey(k: DerivedKeyInput): string {
  const packages = [...new Set(k.packages)].sort();
  return createHash('sha256')
    .update(JSON.stringify({ v: 1, base: k.base, packages, script: k.script }))
    .digest('hex');
}
