import { describe, expect, it } from 'vitest';
import type { VmLaunchSpec } from '../../src/engine/driver.ts';
import { EngineError } from '../../src/engine/errors.ts';
import {
  buildKernelCmdline,
  buildQemuArgv,
  hostTscKhz,
  prepareQemuPlan,
  qemuOptValue,
} from '../../src/engine/qemu-argv.ts';
import { restoreStateUri, saveStateUri } from '../../src/engine/migration.ts';
import { singleQuote as shellQuote } from '../../src/util/shell.ts';
import { withKernelParams } from '../../src/engine/spec.ts';

const TSC = 2_445_426;

function spec(over: Partial<VmLaunchSpec> = {}): VmLaunchSpec {
  return {
    id: 'vm1',
    vmDir: '/var/lib/banger/vms/vm1',
    kernel: '/var/lib/banger/kernels/k1/vmlinuz',
    initrd: '/var/lib/banger/kernels/k1/initrd.img',
    cmdline: 'root=/dev/vda rw quiet',
    vcpus: 2,
    memoryMiB: 512,
    disks: [{ path: '/var/lib/banger/vms/vm1/root.qcow2', format: 'qcow2' }],
    net: { mode: 'user', sshHostPort: 42022 },
    serialLog: '/var/lib/banger/vms/vm1/serial.log',
    agentSocket: '/var/lib/banger/vms/vm1/agent.sock',
    accel: 'tcg',
    ...over,
  };
}

/** The value following `flag` (first occurrence). */
function after(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i < 0 ? undefined : argv[i + 1];
}
function allAfter(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1] as string] : []));
}

describe('buildQemuArgv: the base command line', () => {
  const argv = buildQemuArgv(spec(), { hostTscKhz: TSC });

  it.each([
    ['-M', 'microvm'],
    ['-m', '512'],
    ['-smp', '2'],
    ['-display', 'none'],
    ['-kernel', '/var/lib/banger/kernels/k1/vmlinuz'],
    ['-initrd', '/var/lib/banger/kernels/k1/initrd.img'],
    ['-pidfile', '/var/lib/banger/vms/vm1/qemu.pid'],
    ['-name', 'guest=vm1'],
    ['-serial', 'chardev:serial0'],
    ['-mon', 'chardev=qmp,mode=control'],
  ])('%s %s', (flag, value) => {
    expect(after(argv, flag)).toBe(value);
  });

  it('has the isolation flags and -no-reboot, and never -daemonize', () => {
    for (const f of ['-nodefaults', '-no-user-config', '-no-reboot']) expect(argv).toContain(f);
    expect(argv).not.toContain('-daemonize');
    expect(argv).not.toContain('-incoming');
  });

  it('appends the serial console to a file and serves QMP on vmDir/qmp.sock', () => {
    expect(allAfter(argv, '-chardev')).toEqual([
      'file,id=serial0,path=/var/lib/banger/vms/vm1/serial.log,append=on',
      'socket,id=qmp,path=/var/lib/banger/vms/vm1/qmp.sock,server=on,wait=off',
      'socket,id=agent,path=/var/lib/banger/vms/vm1/agent.sock,server=on,wait=off',
    ]);
  });

  it('is deterministic', () => {
    expect(buildQemuArgv(spec(), { hostTscKhz: TSC })).toEqual(argv);
    const a = prepareQemuPlan(spec(), { hostTscKhz: TSC });
    const b = prepareQemuPlan(spec(), { hostTscKhz: TSC });
    expect(a.argvHash).toBe(b.argvHash);
    expect(a.argvHash).toMatch(/^[0-9a-f]{64}$/);
    expect(prepareQemuPlan(spec({ memoryMiB: 1024 }), { hostTscKhz: TSC }).argvHash).not.toBe(a.argvHash);
  });

  it('gives every argument as one argv element (no shell quoting anywhere)', () => {
    const s = spec({ cmdline: 'root=/dev/vda rw "quoted" $HOME; echo hi', vmDir: '/tmp/a b/vm1' });
    const av = buildQemuArgv(
      { ...s, serialLog: '/tmp/a b/vm1/serial.log', agentSocket: undefined },
      {
        hostTscKhz: TSC,
      },
    );
    expect(after(av, '-append')).toContain('"quoted" $HOME; echo hi');
    expect(after(av, '-pidfile')).toBe('/tmp/a b/vm1/qemu.pid');
  });
});

describe('accelerator', () => {
  it('TCG: tb-size (default 128), qemu64 with ARAT (a tickless idle guest), TSC params on the kernel command line', () => {
    const argv = buildQemuArgv(spec(), { hostTscKhz: TSC });
    expect(after(argv, '-accel')).toBe('tcg,tb-size=128');
    expect(after(argv, '-cpu')).toBe('qemu64,+arat');
    expect(argv.filter((a) => a === '-cpu')).toHaveLength(1);
    expect(after(argv, '-append')).toBe(
      `root=/dev/vda rw quiet console=ttyS0 panic=-1 tsc_early_khz=${TSC} tsc=reliable`,
    );
  });

  it('TCG: tbSizeMiB is honoured', () => {
    expect(after(buildQemuArgv(spec({ tbSizeMiB: 64 }), { hostTscKhz: TSC }), '-accel')).toBe(
      'tcg,tb-size=64',
    );
  });

  it('TCG: a pinned spec.tscKhz wins over the host value', () => {
    const argv = buildQemuArgv(spec({ tscKhz: 3_000_000 }), { hostTscKhz: TSC });
    expect(after(argv, '-append')).toContain('tsc_early_khz=3000000');
  });

  it('TCG without any TSC value is refused (boots would hang half the time)', () => {
    expect(() => buildQemuArgv(spec(), {})).toThrow(/tsc_early_khz/);
  });

  it('KVM: -accel kvm -cpu host,-arch-capabilities, no tb-size, no TSC params', () => {
    const argv = buildQemuArgv(spec({ accel: 'kvm', tbSizeMiB: 64 }), {});
    expect(after(argv, '-accel')).toBe('kvm');
    expect(after(argv, '-cpu')).toBe('host,-arch-capabilities');
    expect(argv.join(' ')).not.toContain('tb-size');
    expect(after(argv, '-append')).toBe('root=/dev/vda rw quiet console=ttyS0 panic=-1');
  });
});

describe('kernel command line', () => {
  it.each([
    ['console=hvc0 root=/dev/vda', 'console=hvc0 root=/dev/vda panic=-1'],
    ['panic=5', 'panic=5 console=ttyS0'],
    ['  root=/dev/vda   rw ', 'root=/dev/vda rw console=ttyS0 panic=-1'],
    ['', 'console=ttyS0 panic=-1'],
  ])('caller values win: %j', (cmdline, expected) => {
    expect(buildKernelCmdline(spec({ accel: 'kvm', cmdline }), null)).toBe(expected);
  });

  it('does not duplicate tsc params the caller already set', () => {
    const out = buildKernelCmdline(spec({ cmdline: 'tsc_early_khz=1000000 tsc=reliable' }), TSC);
    expect(out).toBe('tsc_early_khz=1000000 tsc=reliable console=ttyS0 panic=-1');
  });

  it('withKernelParams matches whole keys only', () => {
    expect(withKernelParams('consoleblank=0', [['console', 'ttyS0']])).toBe('consoleblank=0 console=ttyS0');
    expect(withKernelParams('quiet', [['quiet', null]])).toBe('quiet');
  });
});

describe('disks', () => {
  it('one virtio-blk-device per disk, in order, read-only flag', () => {
    const argv = buildQemuArgv(
      spec({
        disks: [
          { path: '/d/root.qcow2', format: 'qcow2' },
          { path: '/d/seed.raw', format: 'raw', readOnly: true },
        ],
      }),
      { hostTscKhz: TSC },
    );
    expect(allAfter(argv, '-drive')).toEqual([
      'id=disk0,file=/d/root.qcow2,format=qcow2,if=none',
      'id=disk1,file=/d/seed.raw,format=raw,if=none,readonly=on',
    ]);
    expect(allAfter(argv, '-device').filter((d) => d.startsWith('virtio-blk'))).toEqual([
      'virtio-blk-device,drive=disk0',
      'virtio-blk-device,drive=disk1',
    ]);
  });

  it('doubles commas in option values (QEMU escaping)', () => {
    expect(qemuOptValue('/a,b/c')).toBe('/a,,b/c');
    const argv = buildQemuArgv(spec({ disks: [{ path: '/d/x,y.qcow2', format: 'qcow2' }] }), {
      hostTscKhz: TSC,
    });
    expect(after(argv, '-drive')).toBe('id=disk0,file=/d/x,,y.qcow2,format=qcow2,if=none');
  });

  it('no disks: no -drive', () => {
    expect(buildQemuArgv(spec({ disks: [] }), { hostTscKhz: TSC })).not.toContain('-drive');
  });
});

describe('network', () => {
  it('user mode: hostfwd on 127.0.0.1 to guest port 22', () => {
    const argv = buildQemuArgv(spec(), { hostTscKhz: TSC });
    expect(after(argv, '-netdev')).toBe('user,id=net0,hostfwd=tcp:127.0.0.1:42022-:22');
    expect(allAfter(argv, '-device')).toContain('virtio-net-device,netdev=net0');
  });

  it('user mode with guest CIDR, MAC and restrict', () => {
    const argv = buildQemuArgv(
      spec({
        net: {
          mode: 'user',
          sshHostPort: 2222,
          guestCidr: '10.9.0.0/24',
          mac: '52:54:00:12:34:56',
          restrict: true,
        },
      }),
      { hostTscKhz: TSC },
    );
    expect(after(argv, '-netdev')).toBe(
      'user,id=net0,net=10.9.0.0/24,hostfwd=tcp:127.0.0.1:2222-:22,restrict=on',
    );
    expect(allAfter(argv, '-device')).toContain('virtio-net-device,netdev=net0,mac=52:54:00:12:34:56');
  });

  it('tap mode: ifname, no scripts, MAC', () => {
    const argv = buildQemuArgv(spec({ net: { mode: 'tap', tap: 'bgtap0', mac: '52:54:00:aa:bb:cc' } }), {
      hostTscKhz: TSC,
    });
    expect(after(argv, '-netdev')).toBe('tap,id=net0,ifname=bgtap0,script=no,downscript=no');
    expect(allAfter(argv, '-device')).toContain('virtio-net-device,netdev=net0,mac=52:54:00:aa:bb:cc');
  });

  it('none: no NIC at all', () => {
    const argv = buildQemuArgv(spec({ net: { mode: 'none' } }), { hostTscKhz: TSC });
    expect(argv).not.toContain('-netdev');
    expect(argv.join(' ')).not.toContain('virtio-net');
  });

  it('user and tap differ only in the netdev/device pair (same builder for bridged mode)', () => {
    const u = buildQemuArgv(spec({ net: { mode: 'user', sshHostPort: 1, mac: '52:54:00:00:00:01' } }), {
      hostTscKhz: TSC,
    });
    const t = buildQemuArgv(spec({ net: { mode: 'tap', tap: 't0', mac: '52:54:00:00:00:01' } }), {
      hostTscKhz: TSC,
    });
    const diff = u.filter((a, i) => a !== t[i]);
    expect(diff).toEqual(['user,id=net0,hostfwd=tcp:127.0.0.1:1-:22']);
  });
});

describe('agent channel', () => {
  it('virtio-serial port banger.agent on a unix socket', () => {
    const argv = buildQemuArgv(spec(), { hostTscKhz: TSC });
    const devs = allAfter(argv, '-device');
    expect(devs).toContain('virtio-serial-device');
    expect(devs).toContain('virtserialport,chardev=agent,name=banger.agent');
  });

  it('absent without agentSocket', () => {
    const argv = buildQemuArgv(spec({ agentSocket: undefined }), { hostTscKhz: TSC });
    expect(argv.join(' ')).not.toContain('virtio-serial');
  });
});

describe('free page reporting (virtio-balloon)', () => {
  it('a VM with anonymous RAM has the balloon, as its last device', () => {
    const devs = allAfter(buildQemuArgv(spec(), { hostTscKhz: TSC }), '-device');
    expect(devs.at(-1)).toBe('virtio-balloon-device,free-page-reporting=on');
    expect(devs.filter((d) => d.startsWith('virtio-balloon'))).toHaveLength(1);
  });

  it('never with RAM in a file (a discard would punch the shared template file)', () => {
    for (const share of [true, false]) {
      const argv = buildQemuArgv(spec({ memory: { backendFile: '/t/ram', share } }), { hostTscKhz: TSC });
      expect(argv.join(' ')).not.toContain('balloon');
    }
  });
});

describe('warm restore (-incoming)', () => {
  it('is the same argv plus -incoming at the end', () => {
    const cold = buildQemuArgv(spec(), { hostTscKhz: TSC });
    const warm = buildQemuArgv(spec({ incoming: 'exec:cat /state/vm.state' }), { hostTscKhz: TSC });
    expect(warm).toEqual([...cold, '-incoming', 'exec:cat /state/vm.state']);
  });

  it('a different ssh port changes only the hostfwd (the netdev backend is not migrated)', () => {
    const a = buildQemuArgv(spec({ incoming: 'defer' }), { hostTscKhz: TSC });
    const b = buildQemuArgv(spec({ incoming: 'defer', net: { mode: 'user', sshHostPort: 43000 } }), {
      hostTscKhz: TSC,
    });
    expect(a.filter((x, i) => x !== b[i])).toEqual(['user,id=net0,hostfwd=tcp:127.0.0.1:42022-:22']);
  });
});

describe('guest RAM in a file (warm templates and their clones)', () => {
  const ram = '/var/lib/banger/images/i/warm/0123456789abcdef/ram';
  const tpl = buildQemuArgv(spec({ memory: { backendFile: ram, share: true } }), { hostTscKhz: TSC });
  const clone = buildQemuArgv(spec({ memory: { backendFile: ram, share: false }, incoming: 'defer' }), {
    hostTscKhz: TSC,
  });
  // A VM with anonymous RAM, less its free-page-reporting balloon (never with RAM in a file).
  const plain = buildQemuArgv(spec(), { hostTscKhz: TSC });
  const b = plain.indexOf('virtio-balloon-device,free-page-reporting=on');
  plain.splice(b - 1, 2);

  it('the template: the machine uses backend mem, a memory-backend-file of -m MiB, share=on', () => {
    const i = plain.indexOf('-pidfile') + 2;
    // Exactly the plain argv (without the balloon) with the machine option and one -object after
    // the VM's own paths.
    expect(tpl).toEqual([
      ...plain.slice(0, 3),
      'microvm,memory-backend=mem',
      ...plain.slice(4, i),
      '-object',
      `memory-backend-file,id=mem,size=512M,mem-path=${ram},share=on`,
      ...plain.slice(i),
    ]);
    expect(after(tpl, '-m')).toBe('512');
  });

  it('a clone: the same but share=off (copy-on-write) and -incoming defer', () => {
    expect(clone.slice(-2)).toEqual(['-incoming', 'defer']);
    expect(clone.slice(0, -2).map((x) => x.replace('share=off', 'share=on'))).toEqual(tpl);
    expect(allAfter(clone, '-object')).toEqual([
      `memory-backend-file,id=mem,size=512M,mem-path=${ram},share=off`,
    ]);
  });

  it('the size follows memoryMiB; commas in the path are doubled; no -object without spec.memory', () => {
    const big = buildQemuArgv(spec({ memoryMiB: 768, memory: { backendFile: '/s/a,b/ram', share: false } }), {
      hostTscKhz: TSC,
    });
    expect(after(big, '-object')).toBe('memory-backend-file,id=mem,size=768M,mem-path=/s/a,,b/ram,share=off');
    expect(plain).not.toContain('-object');
    expect(after(plain, '-M')).toBe('microvm');
  });

  it('refuses a relative RAM file path', () => {
    expect(() =>
      buildQemuArgv(spec({ memory: { backendFile: 'ram', share: true } }), { hostTscKhz: TSC }),
    ).toThrow(/memory.backendFile must be an absolute path/);
  });
});

describe('state file URIs (exec: runs under /bin/sh)', () => {
  it.each([
    ['/s/vm.state', "'/s/vm.state'"],
    ["/s/it's; rm -rf ~", `'/s/it'\\''s; rm -rf ~'`],
    ['/s/$(x) `y`', "'/s/$(x) `y`'"],
  ])('quotes %j', (path, quoted) => {
    expect(shellQuote(path)).toBe(quoted);
    expect(saveStateUri(path)).toBe(`exec:cat > ${quoted}`);
    expect(restoreStateUri(path)).toBe(`exec:cat ${quoted}`);
  });

  it('round-trips through a real shell', async () => {
    const { execFileSync } = await import('node:child_process');
    const nasty = "/tmp/a b'c$(d)`e`\\f";
    expect(execFileSync('/bin/sh', ['-c', `printf %s ${shellQuote(nasty)}`], { encoding: 'utf8' })).toBe(
      nasty,
    );
  });
});

describe('validation', () => {
  const long = '/' + 'x'.repeat(100);
  it.each<[string, Partial<VmLaunchSpec>, RegExp]>([
    ['bad id', { id: 'a b' }, /bad VM id/],
    ['id with comma', { id: 'a,b' }, /bad VM id/],
    ['relative kernel', { kernel: 'vmlinuz' }, /absolute/],
    ['newline in cmdline', { cmdline: 'a\nb' }, /newline/],
    ['zero vcpus', { vcpus: 0 }, /vcpus/],
    ['tiny memory', { memoryMiB: 8 }, /memoryMiB/],
    ['fractional memory', { memoryMiB: 512.5 }, /memoryMiB/],
    ['qcow3', { disks: [{ path: '/d', format: 'qcow3' as 'raw' }] }, /format/],
    ['port 0', { net: { mode: 'user', sshHostPort: 0 } }, /sshHostPort/],
    ['port 70000', { net: { mode: 'user', sshHostPort: 70000 } }, /sshHostPort/],
    ['bad CIDR', { net: { mode: 'user', sshHostPort: 22, guestCidr: '10.0.0.0/33' } }, /CIDR/],
    ['multicast MAC', { net: { mode: 'tap', tap: 't0', mac: '01:00:5e:00:00:01' } }, /MAC/],
    ['tap name with space', { net: { mode: 'tap', tap: 'a b', mac: '52:54:00:00:00:01' } }, /tap/],
    ['tap name too long', { net: { mode: 'tap', tap: 'x'.repeat(16), mac: '52:54:00:00:00:01' } }, /tap/],
    ['vmDir too long for qmp.sock', { vmDir: long }, /unix socket paths/],
    ['agent socket too long', { agentSocket: long + '/agent.sock' }, /unix socket paths/],
    ['empty incoming', { incoming: '' }, /incoming/],
  ])('%s', (_name, over, re) => {
    let err: unknown;
    try {
      buildQemuArgv(spec(over), { hostTscKhz: TSC });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('invalid_spec');
    expect((err as EngineError).message).toMatch(re);
  });
});

describe('prepareQemuPlan', () => {
  it('lists the files QEMU creates in the VM dir', () => {
    const plan = prepareQemuPlan(spec(), { hostTscKhz: TSC });
    expect(plan.driver).toBe('qemu');
    expect(plan.binary).toBe('qemu-system-x86_64');
    expect(plan.files).toEqual({
      vmDir: '/var/lib/banger/vms/vm1',
      handles: '/var/lib/banger/vms/vm1/handles.json',
      stderrLog: '/var/lib/banger/vms/vm1/qemu.stderr',
      serialLog: '/var/lib/banger/vms/vm1/serial.log',
      pidFile: '/var/lib/banger/vms/vm1/qemu.pid',
      qmpSocket: '/var/lib/banger/vms/vm1/qmp.sock',
      agentSocket: '/var/lib/banger/vms/vm1/agent.sock',
    });
    expect(plan.cmdline).toBe(after(plan.argv, '-append'));
  });
});

describe('hostTscKhz', () => {
  it.each<[string, string, number | null]>([
    [
      'first "cpu MHz" line, in kHz',
      'processor\t: 0\ncpu MHz\t\t: 2445.426\ncpu MHz\t\t: 1200.000\n',
      2_445_426,
    ],
    ['integer MHz', 'cpu MHz : 3000\n', 3_000_000],
    ['missing', 'processor : 0\nflags : fpu\n', null],
    ['zero', 'cpu MHz : 0.000\n', null],
  ])('%s', (_name, text, expected) => {
    expect(hostTscKhz(() => text)).toBe(expected);
  });

  it('unreadable cpuinfo gives null', () => {
    expect(
      hostTscKhz(() => {
        throw new Error('EACCES');
      }),
    ).toBeNull();
  });

  it('reads the real /proc/cpuinfo by default', () => {
    const v = hostTscKhz();
    expect(v === null || v > 100_000).toBe(true);
  });
});
