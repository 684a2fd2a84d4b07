// Pure builder: VmLaunchSpec -> `qemu-system-x86_64 -M microvm ...` argv. Deterministic (same
// spec, same argv, same hash), so a saved VM restores with the same device layout: warm restore
// is this argv plus `-incoming`, bridged mode is the same argv with a tap netdev. A warm template
// keeps its RAM in a file (`memory-backend-file`, share=on) and its clones map that file
// copy-on-write (share=off): the only other difference between their argvs.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { GuestForward, PlanFiles, QemuLaunchPlan, VmLaunchSpec } from './driver.ts';
import { EngineError } from './errors.ts';
import { HANDLES_FILE } from './handles.ts';
import { checkPath, checkSocketPath, validateLaunchSpec, withKernelParams } from './spec.ts';

export const DEFAULT_QEMU_BINARY = 'qemu-system-x86_64';
export const DEFAULT_TB_SIZE_MIB = 128;
/**
 * The TCG vCPU: QEMU's default model plus ARAT (the local APIC timer keeps running in deep idle
 * states). Without it Linux marks the LAPIC timer C3STOP, and with no broadcast timer on microvm
 * (no HPET) it cannot stop the tick: every vCPU takes HZ (250) timer interrupts a second, idle or
 * not, and each costs the VMM real CPU under TCG (docs/bench.md, idle).
 */
export const TCG_CPU = 'qemu64,+arat';
/** A balloon that is never inflated, only there for free page reporting. */
export const BALLOON_DEVICE = 'virtio-balloon-device,free-page-reporting=on';
/** The virtio-serial port name the guest agent opens (/sys/class/virtio-ports/*\/name). */
export const AGENT_PORT_NAME = 'banger.agent';
/** The port name Debian's qemu-guest-agent unit waits for (udev starts it when it appears). */
export const QGA_PORT_NAME = 'org.qemu.guest_agent.0';

export interface QemuArgvOptions {
  /** Host TSC kHz; required under TCG unless the spec pins `tscKhz`. */
  hostTscKhz?: number | null;
  binary?: string;
}

/** Where QEMU's own files live inside the VM directory. */
export function qemuFiles(spec: VmLaunchSpec): PlanFiles {
  const files: PlanFiles = {
    vmDir: spec.vmDir,
    handles: join(spec.vmDir, HANDLES_FILE),
    stderrLog: join(spec.vmDir, 'qemu.stderr'),
    serialLog: spec.serialLog,
    pidFile: join(spec.vmDir, 'qemu.pid'),
    qmpSocket: join(spec.vmDir, 'qmp.sock'),
  };
  if (spec.agentSocket !== undefined) files.agentSocket = spec.agentSocket;
  if (spec.qgaSocket !== undefined) files.qgaSocket = spec.qgaSocket;
  return files;
}

/** The QOM id of the guest RAM backend when guest RAM lives in a file (spec.memory). */
export const MEMORY_BACKEND_ID = 'mem';

/** QEMU option values are comma-separated key=value lists; a literal comma is written twice. */
export function qemuOptValue(value: string): string {
  return value.replaceAll(',', ',,');
}

/**
 * The guest command line: the caller's, plus what this machine needs unless already set:
 * `console=ttyS0` (the only serial port), `panic=-1` (a panicking guest reboots, and with
 * -no-reboot QEMU exits instead of leaving a dead VM "running"), and under TCG on microvm
 * `tsc_early_khz=<host kHz> tsc=reliable` (microvm has no HPET/PM timer; without it about half
 * the boots under load hang calibrating the TSC).
 */
export function buildKernelCmdline(spec: VmLaunchSpec, tscKhz: number | null): string {
  const params: [string, string | null][] = [
    ['console', 'ttyS0'],
    ['panic', '-1'],
  ];
  if (spec.accel === 'tcg') {
    if (tscKhz === null) {
      throw new EngineError(
        'invalid_spec',
        'TCG on microvm needs tsc_early_khz but the host TSC rate is unknown; set spec.tscKhz',
      );
    }
    params.push(['tsc_early_khz', String(tscKhz)], ['tsc', 'reliable']);
  }
  return withKernelParams(spec.cmdline, params);
}

/**
 * Where QEMU finds socat for guestfwd: an absolute path (QEMU searches its own PATH otherwise,
 * and the daemon's may differ from a shell's). scripts/deps.sh installs it.
 */
export const SOCAT_BINARY = '/usr/bin/socat';

/**
 * `guestfwd=tcp:IP:PORT-cmd:socat STDIO UNIX-CONNECT:PATH`: libslirp starts the command for each
 * connection the guest opens to IP:PORT, the connection on its stdio. socat, not a node script:
 * 50 ms wall and 17 ms CPU per start on the loaded 2-core dev host against node's 400 and 100.
 * `-b 65536`: socat's default 8 KiB buffer made 100 MiB through it take 0.20-0.26 s on the host
 * against 0.05 s, each 8 KiB write also one small read for libslirp (bench part egress).
 * The path needs no quoting (spec.ts checkGuestForward); QEMU's option parser would get a comma
 * doubled.
 */
export function guestfwdOption(g: GuestForward): string {
  // The relay (native/egress-relay.c): argv is just the socket; paths checked by spec.ts.
  if (g.relay !== undefined)
    return `guestfwd=tcp:${g.ip}:${g.port}-cmd:${g.relay} ${qemuOptValue(g.unixSocket)}`;
  return `guestfwd=tcp:${g.ip}:${g.port}-cmd:${SOCAT_BINARY} -b 65536 STDIO UNIX-CONNECT:${qemuOptValue(g.unixSocket)}`;
}

export function buildQemuArgv(spec: VmLaunchSpec, opts: QemuArgvOptions = {}): string[] {
  validateLaunchSpec(spec);
  if (spec.memory !== undefined) checkPath('memory.backendFile', spec.memory.backendFile);
  const files = qemuFiles(spec);
  const qmpSocket = files.qmpSocket as string;
  checkSocketPath('QMP socket (vmDir/qmp.sock)', qmpSocket);
  const tscKhz = spec.tscKhz ?? opts.hostTscKhz ?? null;
  const o = qemuOptValue;

  const backendId = spec.memory?.backendId ?? MEMORY_BACKEND_ID;
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(backendId))
    throw new EngineError('invalid_spec', `memory.backendId ${JSON.stringify(backendId)} is not a QOM id`);
  const machine = spec.memory !== undefined ? `microvm,memory-backend=${backendId}` : 'microvm';
  const argv: string[] = ['-name', `guest=${o(spec.id)}`, '-M', machine];
  if (spec.accel === 'kvm') {
    // PVM-style hosts abort on MSR 0x10a with plain `-cpu host`.
    argv.push('-accel', 'kvm', '-cpu', 'host,-arch-capabilities');
  } else {
    argv.push('-accel', `tcg,tb-size=${spec.tbSizeMiB ?? DEFAULT_TB_SIZE_MIB}`, '-cpu', TCG_CPU);
  }
  argv.push('-m', String(spec.memoryMiB), '-smp', String(spec.vcpus));
  argv.push('-nodefaults', '-no-user-config', '-display', 'none');
  // A file chardev with append=on: the console log survives restarts and restores of the VM.
  argv.push('-chardev', `file,id=serial0,path=${o(spec.serialLog)},append=on`, '-serial', 'chardev:serial0');
  argv.push(
    '-chardev',
    `socket,id=qmp,path=${o(qmpSocket)},server=on,wait=off`,
    '-mon',
    'chardev=qmp,mode=control',
  );
  argv.push('-pidfile', files.pidFile as string);
  if (spec.memory !== undefined) {
    // After the VM's own paths on purpose: a clone's RAM file is in its template's directory,
    // and src/vm/orphans.ts takes the first state-dir path of an argv as the VMM's directory.
    const m = spec.memory;
    argv.push(
      '-object',
      `memory-backend-file,id=${backendId},size=${spec.memoryMiB}M,mem-path=${o(m.backendFile)},share=${m.share ? 'on' : 'off'}`,
    );
  }
  argv.push('-kernel', spec.kernel);
  if (spec.initrd !== undefined) argv.push('-initrd', spec.initrd);
  argv.push('-append', buildKernelCmdline(spec, tscKhz));

  spec.disks.forEach((d, i) => {
    const ro = d.readOnly ? ',readonly=on' : '';
    argv.push('-drive', `id=disk${i},file=${o(d.path)},format=${d.format},if=none${ro}`);
    argv.push('-device', `virtio-blk-device,drive=disk${i}`);
  });

  const net = spec.net;
  if (net.mode === 'user') {
    const parts = ['user', 'id=net0'];
    if (net.guestCidr !== undefined) parts.push(`net=${net.guestCidr}`);
    parts.push(`hostfwd=tcp:127.0.0.1:${net.sshHostPort}-:22`);
    if (net.restrict) parts.push('restrict=on');
    if (net.guestfwd !== undefined) parts.push(guestfwdOption(net.guestfwd));
    argv.push('-netdev', parts.join(','));
    argv.push('-device', `virtio-net-device,netdev=net0${net.mac !== undefined ? `,mac=${net.mac}` : ''}`);
  } else if (net.mode === 'tap') {
    argv.push('-netdev', `tap,id=net0,ifname=${net.tap},script=no,downscript=no`);
    argv.push('-device', `virtio-net-device,netdev=net0,mac=${net.mac}`);
  }

  if (spec.agentSocket !== undefined || spec.qgaSocket !== undefined) {
    argv.push('-device', 'virtio-serial-device');
  }
  if (spec.agentSocket !== undefined) {
    argv.push('-chardev', `socket,id=agent,path=${o(spec.agentSocket)},server=on,wait=off`);
    argv.push('-device', `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`);
  }
  if (spec.qgaSocket !== undefined) {
    argv.push('-chardev', `socket,id=qga,path=${o(spec.qgaSocket)},server=on,wait=off`);
    argv.push('-device', `virtserialport,chardev=qga,name=${QGA_PORT_NAME}`);
  }

  if (spec.memory === undefined || spec.memory.balloon === true) {
    // Free page reporting: the guest's virtio_balloon driver hands free 2 MiB blocks back and
    // QEMU drops them, so a burst of guest memory use does not stay resident in the VMM for
    // good (a 600 MiB allocation: Rss 998 → 418 MiB within 15 s, docs/bench.md). Never with RAM
    // in a file: QEMU 7.2 discards a private (share=off) file mapping's pages by punching holes
    // in the file, which is the template's RAM that every other clone reads. Last device, so the
    // others keep their virtio-mmio slots. A fork of a VM that had it keeps it (memory.balloon:
    // its device state has one), with the guest's driver unbound (src/vm/fork.ts).
    argv.push('-device', BALLOON_DEVICE);
  }
  argv.push('-no-reboot');
  if (spec.incoming !== undefined) argv.push('-incoming', spec.incoming);
  return argv;
}

export function argvHash(binary: string, argv: string[]): string {
  return createHash('sha256')
    .update(JSON.stringify([binary, ...argv]))
    .digest('hex');
}

/** The QEMU driver's `prepare`: pure given the host TSC value passed in. */
export function prepareQemuPlan(spec: VmLaunchSpec, opts: QemuArgvOptions = {}): QemuLaunchPlan {
  const binary = opts.binary ?? DEFAULT_QEMU_BINARY;
  const argv = buildQemuArgv(spec, opts);
  const appendAt = argv.indexOf('-append');
  return {
    driver: 'qemu',
    id: spec.id,
    spec,
    binary,
    argv,
    argvHash: argvHash(binary, argv),
    files: qemuFiles(spec),
    cmdline: argv[appendAt + 1] ?? '',
  };
}

/**
 * The host TSC rate in kHz from /proc/cpuinfo "cpu MHz" (first CPU), or null if absent. On VMs
 * and fixed-frequency hosts that is the TSC rate; under cpufreq scaling it is the current clock,
 * so callers that care (saved states) should pin spec.tscKhz.
 */
export function hostTscKhz(
  readCpuinfo: () => string = () => readFileSync('/proc/cpuinfo', 'utf8'),
): number | null {
  let text: string;
  try {
    text = readCpuinfo();
  } catch {
    return null;
  }
  const m = /^cpu MHz\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*$/m.exec(text);
  if (!m || m[1] === undefined) return null;
  const khz = Math.round(Number(m[1]) * 1000);
  return Number.isFinite(khz) && khz > 0 ? khz : null;
}
