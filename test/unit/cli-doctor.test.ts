// banger doctor's checks against scripted probes.
import { describe, expect, it } from 'vitest';
import type { DaemonStatusResult, Image } from '../../generated/types.gen.ts';
import { runDoctor, type DoctorProbes } from '../../src/cli/doctor.ts';

const status: DaemonStatusResult = {
  version: '0.1.0',
  protocol_version: 1,
  pid: 1,
  uptime_ms: 1,
  socket: '/run/banger/bangerd.sock',
  state_dir: '/var/lib/banger',
  started_at: '2026-01-01T00:00:00.000Z',
  helper: {
    configured: true,
    reachable: true,
    socket: '/run/banger-root/bangerd-root.sock',
    version: '0.1.0',
    uid: 0,
  },
  engine: { driver: 'qemu', accel: 'kvm', qemu_version: '7.2.0' },
};

const image = { name: 'debian-bookworm', default: true, kernel_version: '6.1.0-56-cloud-amd64' } as Image;

function probes(
  over: Partial<DoctorProbes> = {},
  files: string[] = ['/dev/kvm', '/dev/vhost-vsock', '/run/systemd/resolve', '/dev/net/tun'],
): DoctorProbes {
  return {
    socket: '/run/banger/bangerd.sock',
    status: async () => status,
    images: async () => [image],
    exists: (p) => files.includes(p),
    canOpenRw: () => true,
    run: async (file, args) => {
      if (file === 'qemu-system-x86_64')
        return {
          code: 0,
          stdout: 'QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)\n',
          stderr: '',
        };
      if (file === 'qemu-img') return { code: 0, stdout: 'qemu-img version 7.2.19\n', stderr: '' };
      if (file === 'ip')
        return {
          code: 0,
          stdout: JSON.stringify([
            {
              ifname: args[4],
              flags: ['UP'],
              addr_info: [{ family: 'inet', local: '10.213.0.1', prefixlen: 24 }],
            },
          ]),
          stderr: '',
        };
      if (file === 'resolvectl') return { code: 0, stdout: 'Link 5 (br-banger): ~vm\n', stderr: '' };
      return { code: 127, stdout: '', stderr: 'not found' };
    },
    freeBytes: async () => 50 * 1024 ** 3,
    dnsRcode: async () => 3,
    bridgeName: 'br-banger',
    bridgeCidr: '10.213.0.0/24',
    dnsPort: 5354,
    ...over,
  };
}

const byName = (cs: { name: string; status: string }[]): Record<string, string> =>
  Object.fromEntries(cs.map((c) => [c.name, c.status]));

describe('banger doctor', () => {
  it('all PASS on a healthy machine, in a fixed order', async () => {
    const cs = await runDoctor(probes());
    expect(cs.map((c) => c.name)).toEqual([
      'daemon',
      'kvm',
      'qemu',
      'vhost-vsock',
      'helper',
      'helper-auth',
      'tun',
      'bridge',
      'dns',
      'dns-routing',
      'default-image',
      'disk',
    ]);
    expect(cs.filter((c) => c.status !== 'PASS')).toEqual([]);
    expect(cs.find((c) => c.name === 'qemu')!.detail).toContain('7.2.19');
    expect(cs.every((c) => c.hint === undefined)).toBe(true);
  });

  it('this machine’s shape: TCG, no vsock, no resolved, no bridge yet, little disk', async () => {
    const cs = await runDoctor(
      probes(
        {
          status: async () => ({
            ...status,
            engine: { driver: 'qemu', accel: 'tcg', accel_reason: 'KVM test boot failed' },
          }),
          run: async (file) =>
            file === 'ip'
              ? { code: 1, stdout: '', stderr: 'Device "br-banger" does not exist.' }
              : probes().run(file, []),
          freeBytes: async () => 5 * 1024 ** 3,
        },
        ['/dev/kvm'],
      ),
    );
    expect(byName(cs)).toMatchObject({
      kvm: 'WARN',
      'vhost-vsock': 'WARN',
      bridge: 'WARN',
      'dns-routing': 'WARN',
      disk: 'WARN',
    });
    const kvm = cs.find((c) => c.name === 'kvm')!;
    expect(kvm.detail).toBe('TCG will be used: KVM test boot failed');
    expect(kvm.hint).toBeDefined();
    expect(cs.find((c) => c.name === 'dns-routing')!.hint).toContain('127.0.0.1#5354');
  });

  it('kvm while the daemon is probing says so and when to look again', async () => {
    const cs = await runDoctor(
      probes({ status: async () => ({ ...status, engine: { driver: 'qemu', accel: 'probing' } }) }),
    );
    expect(cs.find((c) => c.name === 'kvm')).toMatchObject({
      status: 'WARN',
      detail: expect.stringMatching(/test-booting KVM right now/),
      hint: expect.stringMatching(/again/),
    });
  });

  it('FAILs with fix hints: no daemon, no qemu, helper refusing the daemon, DNS silent, disk full', async () => {
    const down = await runDoctor(probes({ status: async () => Promise.reject(new Error('connect ENOENT')) }));
    expect(byName(down)).toMatchObject({
      daemon: 'FAIL',
      helper: 'WARN',
      dns: 'WARN',
      'default-image': 'WARN',
      disk: 'WARN',
    });
    expect(down[0]!.hint).toMatch(/system install/);

    const cs = await runDoctor(
      probes({
        status: async () => ({
          ...status,
          helper: {
            configured: true,
            reachable: false,
            socket: '/x',
            error: 'unauthorized: peer uid 1000 is not allowed',
          },
        }),
        run: async (file, args) =>
          file === 'qemu-system-x86_64' ? { code: 127, stdout: '', stderr: '' } : probes().run(file, args),
        dnsRcode: async () => undefined,
        freeBytes: async () => 1024 ** 3,
      }),
    );
    expect(byName(cs)).toMatchObject({ qemu: 'FAIL', 'helper-auth': 'FAIL', dns: 'FAIL', disk: 'FAIL' });
    expect(cs.find((c) => c.name === 'qemu')!.hint).toMatch(/apt-get install/);
    expect(cs.find((c) => c.name === 'helper-auth')!.hint).toMatch(/--owner/);
  });

  it('/dev/net/tun that the daemon user cannot open FAILs with the udev hint', async () => {
    const cs = await runDoctor(probes({ canOpenRw: (p) => p !== '/dev/net/tun' }));
    const tun = cs.find((c) => c.name === 'tun')!;
    expect(tun.status).toBe('FAIL');
    expect(tun.hint).toMatch(/chmod 0666 \/dev\/net\/tun/);
  });

  it('a bridge without the configured gateway address FAILs; rootless is a WARN', async () => {
    const wrong = await runDoctor(
      probes({
        run: async (file, args) =>
          file === 'ip'
            ? {
                code: 0,
                stdout: JSON.stringify([
                  { flags: ['UP'], addr_info: [{ family: 'inet', local: '10.9.0.1', prefixlen: 24 }] },
                ]),
                stderr: '',
              }
            : probes().run(file, args),
      }),
    );
    expect(wrong.find((c) => c.name === 'bridge')).toMatchObject({ status: 'FAIL' });
    const rootless = await runDoctor(
      probes({ status: async () => ({ ...status, helper: { configured: false, reachable: false } }) }),
    );
    expect(byName(rootless)).toMatchObject({ helper: 'WARN', 'helper-auth': 'WARN' });
  });

  it('rootless: a silent .vm DNS server is a WARN that says why, not a FAIL; routing is not checked', async () => {
    const rootlessStatus = async (): Promise<DaemonStatusResult> => ({
      ...status,
      helper: { configured: false, reachable: false },
    });
    const silent = await runDoctor(probes({ status: rootlessStatus, dnsRcode: async () => undefined }));
    const dns = silent.find((c) => c.name === 'dns')!;
    expect(dns).toMatchObject({ status: 'WARN' });
    expect(dns.detail).toMatch(/no \.vm answer on 127\.0\.0\.1:5354; unused in rootless mode/);
    expect(silent.find((c) => c.name === 'dns-routing')).toMatchObject({
      status: 'WARN',
      detail: expect.stringMatching(/^not checked: rootless mode/),
    });
    expect(silent.some((c) => c.status === 'FAIL')).toBe(false);
    // A server that answers is still reported as working.
    const answers = await runDoctor(probes({ status: rootlessStatus }));
    expect(byName(answers)).toMatchObject({ dns: 'PASS', 'dns-routing': 'WARN' });
    // With a root helper, the same silence stays a FAIL.
    const bridged = await runDoctor(probes({ dnsRcode: async () => undefined }));
    expect(byName(bridged)).toMatchObject({ dns: 'FAIL', 'dns-routing': 'PASS' });
  });

  it('engine: PASS with the driver and why; a configured Firecracker that cannot run here is a WARN', async () => {
    const withEngine = (driver: string, driver_reason: string): Partial<DoctorProbes> => ({
      status: async () => ({ ...status, engine: { driver, driver_reason, accel: 'kvm' } }),
    });
    const ok = await runDoctor(probes(withEngine('qemu', 'engine = "qemu" (the default)')));
    expect(ok.find((c) => c.name === 'engine')).toEqual({
      name: 'engine',
      status: 'PASS',
      detail: 'qemu: engine = "qemu" (the default)',
    });
    const fb = await runDoctor(
      probes(
        withEngine(
          'qemu',
          'engine = "firecracker" is configured, but Firecracker needs KVM and there is no /dev/kvm; running QEMU (TCG works without KVM)',
        ),
      ),
    );
    expect(fb.find((c) => c.name === 'engine')).toMatchObject({
      status: 'WARN',
      hint: expect.stringContaining('engine = "qemu"'),
    });
  });
});
