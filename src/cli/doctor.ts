// `banger doctor`: each check says PASS, WARN or FAIL with what it saw and, when not PASS, how to
// fix it. The checks read the machine and the daemon through DoctorProbes, so they are tested
// with scripted probes; the command wires the real ones.
import type { DaemonStatusResult, Image } from '../../generated/types.gen.ts';

export type CheckStatus = 'PASS' | 'WARN' | 'FAIL';

export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
  hint?: string;
}

export interface DoctorProbes {
  socket: string;
  /** daemon.status; throws when the daemon does not answer. */
  status(): Promise<DaemonStatusResult>;
  images(): Promise<Image[]>;
  exists(path: string): boolean;
  /** Whether this process may open path read-write. */
  canOpenRw(path: string): boolean;
  run(file: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  freeBytes(path: string): Promise<number>;
  /** rcode of an A query to 127.0.0.1:port, or undefined when nothing answered. */
  dnsRcode(port: number, name: string): Promise<number | undefined>;
  bridgeName: string;
  bridgeCidr: string;
  dnsPort: number;
}

const GiB = 1024 ** 3;

function check(name: string, status: CheckStatus, detail: string, hint?: string): Check {
  return hint !== undefined && status !== 'PASS' ? { name, status, detail, hint } : { name, status, detail };
}

export async function runDoctor(p: DoctorProbes): Promise<Check[]> {
  const out: Check[] = [];
  let status: DaemonStatusResult | undefined;
  try {
    status = await p.status();
    out.push(check('daemon', 'PASS', `bangerd ${status.version} answers on ${p.socket}`));
  } catch (err) {
    out.push(
      check(
        'daemon',
        'FAIL',
        `bangerd does not answer on ${p.socket}: ${(err as Error).message}`,
        'start it: sudo banger system install --owner $USER (or bin/bangerd for a user install)',
      ),
    );
  }

  // KVM: usable means /dev/kvm opens read-write and the daemon's test boot chose it.
  const accel = status?.engine?.accel;
  if (!p.exists('/dev/kvm')) {
    out.push(
      check(
        'kvm',
        'WARN',
        'no /dev/kvm: TCG will be used (slower, same behaviour)',
        'enable virtualization (VT-x/AMD-V, nested virtualization in a cloud VM) to get KVM',
      ),
    );
  } else if (!p.canOpenRw('/dev/kvm')) {
    out.push(
      check(
        'kvm',
        'WARN',
        '/dev/kvm exists but this user cannot open it: TCG will be used',
        'add the daemon user to the kvm group: sudo usermod -aG kvm $USER (then log in again)',
      ),
    );
  } else if (accel === 'kvm') {
    out.push(check('kvm', 'PASS', 'KVM works (the daemon’s test boot used it)'));
  } else if (accel === 'tcg') {
    out.push(
      check(
        'kvm',
        'WARN',
        `TCG will be used: ${status?.engine?.accel_reason ?? 'KVM failed its test boot'}`,
        'KVM is present but unusable here; guests still run, slower (set accel = "kvm" in the config to insist)',
      ),
    );
  } else if (accel === 'probing') {
    out.push(
      check(
        'kvm',
        'WARN',
        '/dev/kvm opens; the daemon is test-booting KVM right now to decide whether it works',
        'run banger doctor again in about 10 s',
      ),
    );
  } else {
    out.push(
      check(
        'kvm',
        'WARN',
        '/dev/kvm opens; whether it works is decided by the daemon’s first test boot',
        'run banger daemon status after creating a VM',
      ),
    );
  }

  // The VMM driver the daemon runs, and why (a configured Firecracker falls back to QEMU without
  // its binary or a usable KVM).
  const eng = status?.engine;
  if (eng?.driver_reason !== undefined) {
    const fellBack = /is configured, but/.test(eng.driver_reason);
    out.push(
      fellBack
        ? check(
            'engine',
            'WARN',
            `${eng.driver}: ${eng.driver_reason}`,
            'install firecracker on PATH and make /dev/kvm usable, or set engine = "qemu" in the config',
          )
        : check('engine', 'PASS', `${eng.driver}: ${eng.driver_reason}`),
    );
  }

  const q = await p
    .run('qemu-system-x86_64', ['--version'])
    .catch(() => ({ code: null, stdout: '', stderr: '' }));
  const img = await p.run('qemu-img', ['--version']).catch(() => ({ code: null, stdout: '', stderr: '' }));
  const qv = /version ([0-9][^\s(,]*)/.exec(q.stdout)?.[1];
  if (q.code !== 0 || !qv) {
    out.push(
      check(
        'qemu',
        'FAIL',
        'qemu-system-x86_64 is not installed (or does not run)',
        'sudo apt-get install --no-install-recommends qemu-system-x86 qemu-utils',
      ),
    );
  } else if (img.code !== 0) {
    out.push(
      check(
        'qemu',
        'FAIL',
        `qemu ${qv}, but qemu-img is missing`,
        'sudo apt-get install --no-install-recommends qemu-utils',
      ),
    );
  } else {
    out.push(check('qemu', 'PASS', `qemu-system-x86_64 ${qv}, qemu-img present`));
  }

  out.push(
    p.exists('/dev/vhost-vsock')
      ? check('vhost-vsock', 'PASS', '/dev/vhost-vsock present')
      : check(
          'vhost-vsock',
          'WARN',
          'no /dev/vhost-vsock: the guest agent uses a virtio-serial port instead',
          'nothing to do; load vhost_vsock if you want vsock guests',
        ),
  );

  // The root helper, as the daemon sees it (the daemon pings it with its own uid).
  const h = status?.helper;
  if (!status) {
    out.push(check('helper', 'WARN', 'not checked: the daemon does not answer'));
    out.push(check('helper-auth', 'WARN', 'not checked: the daemon does not answer'));
  } else if (!h?.configured) {
    out.push(
      check(
        'helper',
        'WARN',
        'no root helper configured: rootless, user networking only',
        'for bridged VMs, <name>.vm and NAT: sudo banger system install --owner $USER',
      ),
    );
    out.push(check('helper-auth', 'WARN', 'not checked: no root helper'));
  } else if (h.reachable) {
    out.push(check('helper', 'PASS', `bangerd-root ${h.version ?? '?'} answers on ${h.socket ?? '?'}`));
    out.push(check('helper-auth', 'PASS', `bangerd-root serves the daemon (it runs as uid ${h.uid ?? '?'})`));
  } else if (/unauthorized/.test(h.error ?? '')) {
    out.push(check('helper', 'PASS', `bangerd-root listens on ${h.socket ?? '?'}`));
    out.push(
      check(
        'helper-auth',
        'FAIL',
        `bangerd-root refuses the daemon: ${h.error ?? ''}`,
        'the helper serves another uid: reinstall with sudo banger system install --owner <the daemon user>',
      ),
    );
  } else {
    out.push(
      check(
        'helper',
        'FAIL',
        `bangerd-root does not answer on ${h.socket ?? '?'}: ${h.error ?? ''}`,
        'sudo systemctl restart bangerd-root (or banger system status)',
      ),
    );
    out.push(check('helper-auth', 'WARN', 'not checked: the helper does not answer'));
  }

  // Bridged VMMs open their tap through /dev/net/tun as the daemon user (udev makes it 0666).
  if (h?.configured) {
    out.push(
      !p.exists('/dev/net/tun')
        ? check(
            'tun',
            'FAIL',
            'no /dev/net/tun: bridged VMs cannot get a network',
            'the kernel needs CONFIG_TUN (modprobe tun)',
          )
        : p.canOpenRw('/dev/net/tun')
          ? check('tun', 'PASS', '/dev/net/tun opens read-write for this user')
          : check(
              'tun',
              'FAIL',
              '/dev/net/tun does not open read-write for this user: a bridged VM’s QEMU (run as the daemon user) cannot open its tap',
              'sudo chmod 0666 /dev/net/tun (udev’s default; make it stick with a udev rule: KERNEL=="tun", MODE="0666")',
            ),
    );
  }

  // The bridge: made by the helper on the first bridged VM.
  const br = await p
    .run('ip', ['-json', 'addr', 'show', 'dev', p.bridgeName])
    .catch(() => ({ code: 1, stdout: '', stderr: '' }));
  const gateway = gatewayOf(p.bridgeCidr);
  if (br.code !== 0) {
    out.push(
      h?.reachable
        ? check(
            'bridge',
            'WARN',
            `${p.bridgeName} does not exist yet`,
            'it is created with the first bridged VM: banger vm create --network bridge',
          )
        : check(
            'bridge',
            'WARN',
            `${p.bridgeName} does not exist (no root helper)`,
            'bridged networking needs bangerd-root: sudo banger system install --owner $USER',
          ),
    );
  } else {
    const info = parseAddrShow(br.stdout);
    if (!info.up)
      out.push(
        check(
          'bridge',
          'FAIL',
          `${p.bridgeName} is down`,
          'sudo banger system restart (the daemon re-ensures it on the next bridged VM)',
        ),
      );
    else if (!info.addresses.includes(`${gateway}/${p.bridgeCidr.split('/')[1]}`))
      out.push(
        check(
          'bridge',
          'FAIL',
          `${p.bridgeName} lacks ${gateway}/${p.bridgeCidr.split('/')[1]} (has ${info.addresses.join(', ') || 'none'})`,
          'check bridge_cidr in the config matches, then sudo banger system restart',
        ),
      );
    else
      out.push(check('bridge', 'PASS', `${p.bridgeName} up with ${gateway}/${p.bridgeCidr.split('/')[1]}`));
  }

  // DNS: the daemon's server, then whether the host's resolver routes .vm to it.
  const rootless = h?.configured === false;
  if (p.dnsPort === 0) {
    out.push(
      check(
        'dns',
        'WARN',
        '.vm DNS is off (dns_port = 0)',
        'set dns_port in the config to resolve <name>.vm',
      ),
    );
  } else if (!status) {
    out.push(check('dns', 'WARN', 'not checked: the daemon does not answer'));
  } else {
    const rcode = await p.dnsRcode(p.dnsPort, 'banger-doctor-probe.vm').catch(() => undefined);
    const silent = `no .vm answer on 127.0.0.1:${p.dnsPort}${rcode !== undefined ? ` (rcode ${rcode})` : ''}`;
    out.push(
      rcode === 3 || rcode === 0
        ? check('dns', 'PASS', `the daemon answers .vm on 127.0.0.1:${p.dnsPort}`)
        : rootless
          ? // Only bridged VMs have <name>.vm addresses, and bridges need the root helper: a
            // rootless daemon's VMs are reached by port forwards, so a silent server breaks nothing.
            check('dns', 'WARN', `${silent}; unused in rootless mode (only bridged VMs have <name>.vm)`)
          : check(
              'dns',
              'FAIL',
              silent,
              'another program may hold the port: see the daemon log for "dns", or change dns_port',
            ),
    );
  }
  if (rootless) {
    out.push(
      check(
        'dns-routing',
        'WARN',
        'not checked: rootless mode has no bridged VMs, so nothing needs <name>.vm routed to banger',
      ),
    );
  } else if (!p.exists('/run/systemd/resolve')) {
    out.push(
      check(
        'dns-routing',
        'WARN',
        'systemd-resolved is not running: the host resolves <name>.vm only through a resolver pointed at banger',
        `forward the vm domain to 127.0.0.1:${p.dnsPort} (dnsmasq: server=/vm/127.0.0.1#${p.dnsPort}); see docs/networking.md`,
      ),
    );
  } else {
    const d = await p
      .run('resolvectl', ['domain', p.bridgeName])
      .catch(() => ({ code: 1, stdout: '', stderr: '' }));
    out.push(
      d.code === 0 && /~vm\b/.test(d.stdout)
        ? check('dns-routing', 'PASS', `systemd-resolved routes ~vm via ${p.bridgeName}`)
        : check(
            'dns-routing',
            'WARN',
            `systemd-resolved does not route ~vm via ${p.bridgeName} yet`,
            'it is set up with the bridge (first bridged VM); or sudo banger system restart',
          ),
    );
  }

  if (status) {
    const images = await p.images().catch(() => [] as Image[]);
    const def = images.find((i) => i.default);
    out.push(
      def
        ? check('default-image', 'PASS', `${def.name} (kernel ${def.kernel_version})`)
        : check(
            'default-image',
            'WARN',
            'no default image yet',
            'banger image build (about 2 minutes; the first vm create does it too)',
          ),
    );
    const free = await p.freeBytes(status.state_dir).catch(() => undefined);
    if (free === undefined) out.push(check('disk', 'WARN', `cannot read free space of ${status.state_dir}`));
    else {
      const gib = `${(free / GiB).toFixed(1)} GiB free in ${status.state_dir}`;
      out.push(
        free < 2 * GiB
          ? check(
              'disk',
              'FAIL',
              gib,
              'free space: each VM needs room for its disk to grow; banger vm prune removes stopped VMs',
            )
          : free < 10 * GiB
            ? check(
                'disk',
                'WARN',
                gib,
                'images take about 0.5 GiB and each VM grows its disk; consider freeing space',
              )
            : check('disk', 'PASS', gib),
      );
    }
  } else {
    out.push(check('default-image', 'WARN', 'not checked: the daemon does not answer'));
    out.push(check('disk', 'WARN', 'not checked: the daemon does not answer'));
  }
  return out;
}

function gatewayOf(cidr: string): string {
  const [a = '0.0.0.0'] = cidr.split('/');
  const o = a.split('.').map(Number);
  return `${o[0]}.${o[1]}.${o[2]}.${(o[3] ?? 0) + 1}`;
}

function parseAddrShow(json: string): { up: boolean; addresses: string[] } {
  try {
    const l = (
      JSON.parse(json) as {
        flags?: string[];
        addr_info?: { family: string; local: string; prefixlen: number }[];
      }[]
    )[0];
    return {
      up: l?.flags?.includes('UP') ?? false,
      addresses: (l?.addr_info ?? [])
        .filter((a) => a.family === 'inet')
        .map((a) => `${a.local}/${a.prefixlen}`),
    };
  } catch {
    return { up: false, addresses: [] };
  }
}
