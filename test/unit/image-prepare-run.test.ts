// runPrepare against a stand-in QEMU: a script that reads the argv runPrepare built (serial log
// path, disks, kernel command line) and writes a console like a prepare boot's. Covers the
// prepare disk, progress streaming, the exit marker, the log tail on failure, the timeout and
// an initramfs without prepare mode.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PrepareError, runPrepare } from '../../src/image/prepare.ts';
import { findStateDirVmms } from '../../src/vm/orphans.ts';

let dir: string;

/** A fake qemu-system-x86_64: MODE picks what the "guest" does. */
function fakeQemu(mode: 'ok' | 'fail' | 'silent' | 'hang'): string {
  const p = join(dir, `qemu-${mode}`);
  writeFileSync(
    p,
    `#!/bin/sh
printf '%s\\0' "$@" > "${dir}/argv"
log= ; disks= ; append=
while [ $# -gt 0 ]; do
	case "$1" in
	-chardev) case "$2" in file,*) log=\${2#*path=}; log=\${log%%,*} ;; esac ;;
	-drive) disks="$disks \${2#*file=}"; echo "$2" >> "${dir}/drives" ;;
	-append) append=$2 ;;
	esac
	shift
done
echo "$append" > "${dir}/append"
for d in $disks; do echo "\${d%%,*}"; done > "${dir}/disks"
{
	echo "[    0.100000] Linux version 6.1"
	echo "banger-initramfs: prepare: running prepare.sh"
	echo "banger-prepare: image: Debian"
	echo "banger-prepare: installed: udev dbus"
} >> "$log"
case ${JSON.stringify(mode)} in
ok) echo "banger-prepare-exit=0" >> "$log" ;;
fail) echo "E: Unable to locate package nope" >> "$log"; echo "banger-prepare-exit=100" >> "$log" ;;
silent) ;;
hang) exec sleep 30 ;;
esac
echo "[   24.200000] reboot: Power down" >> "$log"
`,
  );
  chmodSync(p, 0o755);
  return p;
}

function initrd(withPrepare: boolean): string {
  const p = join(dir, `initrd-${withPrepare}.gz`);
  writeFileSync(
    p,
    gzipSync(Buffer.from(withPrepare ? 'echo "banger-prepare-exit=$rc"' : 'exec switch_root')),
  );
  return p;
}

function opts(
  mode: 'ok' | 'fail' | 'silent' | 'hang',
  extra: Partial<Parameters<typeof runPrepare>[0]> = {},
) {
  return {
    disk: { path: join(dir, 'target.qcow2'), format: 'qcow2' as const },
    kernelPath: join(dir, 'vmlinuz'),
    initrdPath: initrd(true),
    workDir: join(dir, 'work'),
    script: '#!/bin/sh\necho hi\n',
    files: [{ path: 'run-script', content: 'echo user\n', mode: 0o755 }],
    qemu: fakeQemu(mode),
    accel: 'tcg' as const,
    ...extra,
  };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bg-prep-run-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('runPrepare', () => {
  it('boots with banger.prepare and user-mode ip=, streams prepare.sh output and succeeds on exit 0', async () => {
    const lines: string[] = [];
    const r = await runPrepare(opts('ok', { onProgress: (l) => lines.push(l) }));
    expect(lines).toEqual(['banger-prepare: image: Debian', 'banger-prepare: installed: udev dbus']);
    expect(r.output).toContain('installed: udev dbus');
    expect(r.log).toBe(join(dir, 'work', 'prepare-serial.log'));
    const append = readFileSync(join(dir, 'append'), 'utf8');
    expect(append).toContain('banger.prepare');
    expect(append).toContain('root=LABEL=banger-root rw');
    expect(append).toContain('ip=10.0.2.15::10.0.2.2:255.255.255.0:banger-prepare:eth0:off:10.0.2.3');
    // The target first, then the prepare disk (removed afterwards).
    const disks = readFileSync(join(dir, 'disks'), 'utf8').trim().split('\n');
    expect(disks).toEqual([join(dir, 'target.qcow2'), join(dir, 'work', 'prepare-disk.ext4')]);
    // The target passes the guest's fstrim through (freed blocks leave the overlay).
    const drives = readFileSync(join(dir, 'drives'), 'utf8').trim().split('\n');
    expect(drives[0]).toMatch(/format=qcow2,.*discard=unmap/);
    expect(drives[1]).not.toContain('discard');
  });

  it('builds the prepare disk with prepare.sh, resolv.conf and the extra files, labelled banger-prep', async () => {
    // A "QEMU" that keeps a copy of the prepare disk before runPrepare removes it.
    const keep = join(dir, 'qemu-keep');
    writeFileSync(
      keep,
      `#!/bin/sh\nfor a; do case "$a" in *prepare-disk.ext4*) f=\${a#*file=}; cp "\${f%%,*}" "${dir}/kept.ext4" ;; esac; done\n` +
        `for a; do case "$a" in file,*) l=\${a#*path=}; echo banger-prepare-exit=0 >> "\${l%%,*}" ;; esac; done\n`,
    );
    chmodSync(keep, 0o755);
    await runPrepare({ ...opts('ok'), qemu: keep });
    const img = join(dir, 'kept.ext4');
    expect(execFileSync('e2label', [img], { encoding: 'utf8' }).trim()).toBe('banger-prep');
    const cat = (p: string): string =>
      execFileSync('debugfs', ['-R', `cat ${p}`, img], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      });
    expect(cat('/prepare.sh')).toBe('#!/bin/sh\necho hi\n');
    expect(cat('/resolv.conf')).toBe('nameserver 10.0.2.3\n');
    expect(cat('/run-script')).toBe('echo user\n');
  });

  it('fails with the status and the log tail when prepare.sh fails', async () => {
    const err = await runPrepare(opts('fail')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrepareError);
    const e = err as PrepareError;
    expect(e.exitCode).toBe(100);
    expect(e.message).toContain('prepare script exited with status 100');
    expect(e.message).toContain('E: Unable to locate package nope');
  });

  it('fails when the VM powers off without the marker', async () => {
    await expect(runPrepare(opts('silent'))).rejects.toThrow(/without reporting an exit status/);
  });

  it('kills QEMU at the timeout, and on abort', async () => {
    const t0 = Date.now();
    await expect(runPrepare(opts('hang', { timeoutMs: 800 }))).rejects.toThrow(/timed out after 1 s/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    await expect(runPrepare(opts('hang', { signal: ac.signal }))).rejects.toThrow(/aborted/);
  });

  it('names its staging directory in the QEMU argv: a daemon restart finds it as an orphan VMM', async () => {
    // Pulls and derived builds prepare in STATE/images/.import-* or .build-* (makeStagingDir).
    const staging = join(dir, 'state', 'images', '.build-0a1b2c3d-py');
    await runPrepare(
      opts('ok', { disk: { path: join(staging, 'rootfs.qcow2'), format: 'qcow2' }, workDir: staging }),
    );
    // A fake /proc with that QEMU still running, as after bangerd was killed mid-prepare.
    const proc = join(dir, 'proc');
    mkdirSync(join(proc, '4242'), { recursive: true });
    writeFileSync(
      join(proc, '4242', 'status'),
      'Name:\tqemu-system-x86\nState:\tS\nUid:\t1000\t1000\t1000\t1000\n',
    );
    writeFileSync(join(proc, '4242', 'comm'), 'qemu-system-x86\n');
    writeFileSync(
      join(proc, '4242', 'cmdline'),
      `qemu-system-x86_64\0${readFileSync(join(dir, 'argv'), 'utf8')}`,
    );
    const found = findStateDirVmms(join(dir, 'state'), 1000, proc);
    expect(found.map((p) => p.pid)).toEqual([4242]);
    expect(found[0]?.dir.startsWith(staging)).toBe(true);
  });

  it('refuses an initramfs without prepare mode before booting', async () => {
    await expect(runPrepare(opts('ok', { initrdPath: initrd(false) }))).rejects.toThrow(/no prepare mode/);
  });
});
