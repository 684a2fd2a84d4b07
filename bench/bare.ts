// The baseline for create → SSH-ready: the bare engine, started by the benchmark itself. Same
// kernel, initramfs and base image (a qcow2 overlay made by the same createOverlay), a seed disk
// from the same buildSeedImage, the same QEMU argv builder, accelerator, VM size and network mode
// (user-mode, SSH forwarded from 127.0.0.1), and the same `ssh true` with the same options, tried
// every READY_POLL_MS from the moment QEMU is spawned. No daemon, no RPC, no steps, no agent
// handshake: what is left of banger's time above this is orchestration.
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Accel, VmLaunchSpec } from '../src/engine/driver.ts';
import { buildQemuArgv, DEFAULT_QEMU_BINARY, hostTscKhz } from '../src/engine/qemu-argv.ts';
import { buildSeedImage, generateHostKey, randomMachineId } from '../src/image/seed.ts';
import { createOverlay } from '../src/vm/disk.ts';
import { guestCmdline, READY_POLL_MS } from '../src/vm/machine.ts';
import { releasePort, reservePort } from '../src/vm/ports.ts';
import { hostKeyAlias, sshExec, sshPaths, type SshPaths, type SshTarget } from '../src/vm/ssh.ts';
import { watchFile } from './watch.ts';
import { pidAlive, sleep } from './world.ts';

export interface BareInputs {
  /** Where this boot's files go (created). */
  dir: string;
  name: string;
  kernel: string;
  initrd?: string;
  rootfs: string;
  rootfsFormat: 'raw' | 'qcow2';
  diskSizeBytes: number;
  vcpus: number;
  memoryMib: number;
  accel: Accel;
  /** The daemon's state dir: its install key logs in, as it does for banger's VMs. */
  daemonStateDir: string;
  timeoutMs: number;
  /** Kernel command line with NAME for the VM name; default: banger's guestCmdline. */
  cmdlineTemplate?: string;
  /** Appended to the QEMU command line (experiments, e.g. a device). */
  qemuArgs?: string[];
  /** Once SSH answers, collect the guest's own view of its boot (systemd-analyze, dmesg gaps). */
  diagnose?: boolean;
}

/** What the guest says about its boot (collected over SSH after it is ready). */
export interface GuestProfile {
  systemd_analyze: string;
  critical_chain: string;
  blame: string;
  /** The longest silences in the kernel log: seconds before the line that ended them. */
  dmesg_gaps: { gap_s: number; at_s: number; line: string }[];
  dmesg_last_s: number;
}

/** The `n` longest gaps between consecutive timestamped dmesg lines. */
export function dmesgGaps(text: string, n = 10): { gaps: GuestProfile['dmesg_gaps']; last: number } {
  let prev: number | undefined;
  let last = 0;
  const gaps: GuestProfile['dmesg_gaps'] = [];
  for (const line of text.split('\n')) {
    const m = /^\[\s*(\d+\.\d+)\]\s?(.*)$/.exec(line);
    if (!m) continue;
    const t = Number(m[1]);
    if (prev !== undefined) gaps.push({ gap_s: Math.round((t - prev) * 1000) / 1000, at_s: t, line: m[2]! });
    prev = t;
    last = t;
  }
  gaps.sort((a, b) => b.gap_s - a.gap_s);
  return { gaps: gaps.slice(0, n), last };
}

/** Milliseconds from the start of the run (before the overlay is made) to each stage. */
export interface BareTimes {
  disk: number;
  seed: number;
  vmmSpawned: number;
  kernelBooted?: number;
  userspace?: number;
  sshd?: number;
  sshReady: number;
  sshAttempts: number;
}

/** A clean argv-only view of the baseline's QEMU command line (for the results file). */
export function bareSpec(i: BareInputs, sshHostPort: number): VmLaunchSpec {
  const spec: VmLaunchSpec = {
    id: i.name,
    vmDir: i.dir,
    kernel: i.kernel,
    cmdline:
      i.cmdlineTemplate !== undefined
        ? i.cmdlineTemplate.replaceAll('NAME', i.name)
        : guestCmdline({ name: i.name, networkMode: 'user' }),
    vcpus: i.vcpus,
    memoryMiB: i.memoryMib,
    disks: [
      { path: join(i.dir, 'root.qcow2'), format: 'qcow2' },
      { path: join(i.dir, 'seed.ext4'), format: 'raw', readOnly: true },
    ],
    net: { mode: 'user', sshHostPort },
    serialLog: join(i.dir, 'serial.log'),
    agentSocket: join(i.dir, 'agent.sock'),
    accel: i.accel,
  };
  if (i.initrd) spec.initrd = i.initrd;
  return spec;
}

/**
 * Listen on the agent socket without speaking: only to timestamp the guest's own lines
 * (`banger-userspace`, `banger-ready`), so the baseline has the same stage marks. The guest does
 * the same work either way (its agent writes go through instead of retrying).
 */
function listenAgent(path: string, onLine: (line: string) => void): () => void {
  let stopped = false;
  let sock: ReturnType<typeof connect> | undefined;
  const attempt = (): void => {
    if (stopped) return;
    let buf = '';
    const s = connect(path);
    sock = s;
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        onLine(buf.slice(0, nl).trim());
        buf = buf.slice(nl + 1);
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      if (!stopped) setTimeout(attempt, 50);
    });
  };
  attempt();
  return () => {
    stopped = true;
    sock?.destroy();
  };
}

export interface BareRun {
  times: BareTimes;
  profile?: GuestProfile;
  pid: number;
  argv: string[];
  /** Stop QEMU and wait for it. */
  stop: () => Promise<void>;
}

export async function bareBoot(i: BareInputs): Promise<BareRun> {
  await mkdir(i.dir, { recursive: true });
  const t0 = performance.now();
  const at = (): number => Math.round(performance.now() - t0);

  await createOverlay(i.rootfs, join(i.dir, 'root.qcow2'), i.diskSizeBytes, i.rootfsFormat);
  const disk = at();

  const daemonKeys = sshPaths(i.daemonStateDir);
  const hostKey = await generateHostKey();
  await buildSeedImage({
    path: join(i.dir, 'seed.ext4'),
    authorizedKeys: [(await readFile(daemonKeys.publicKey, 'utf8')).trim()],
    hostKeyPrivate: hostKey.privateKey,
    hostKeyPublic: hostKey.publicKey,
    hostname: i.name,
    machineId: randomMachineId(),
    nameservers: ['10.0.2.3'],
  });
  const alias = hostKeyAlias(i.name);
  const knownHosts = join(i.dir, 'known_hosts');
  const [type, blob] = hostKey.publicKey.split(/\s+/);
  await writeFile(knownHosts, `${alias} ${type} ${blob}\n`, { mode: 0o600 });
  const ssh: SshPaths = { ...daemonKeys, knownHosts };
  const seed = at();

  const port = await reservePort();
  const spec = bareSpec(i, port);
  const argv = [...buildQemuArgv(spec, { hostTscKhz: hostTscKhz() }), ...(i.qemuArgs ?? [])];
  const errFd = openSync(join(i.dir, 'qemu.stderr'), 'a');
  const child = spawn(DEFAULT_QEMU_BINARY, argv, { cwd: i.dir, stdio: ['ignore', errFd, errFd] });
  closeSync(errFd);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', reject);
  });
  const vmmSpawned = at();
  releasePort(port);

  const serial = watchFile(() => spec.serialLog, { kernel: /Linux version/ });
  const marks = new Map<string, number>();
  const stopAgent = listenAgent(spec.agentSocket!, (line) => {
    if (line === 'banger-userspace' && !marks.has('userspace')) marks.set('userspace', at());
    if (line.startsWith('banger-ready') && !marks.has('sshd')) marks.set('sshd', at());
  });
  const stop = async (): Promise<void> => {
    serial.stop();
    stopAgent();
    if (pidAlive(pid)) child.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (pidAlive(pid)) child.kill('SIGKILL');
  };

  try {
    const deadline = performance.now() + i.timeoutMs;
    let attempts = 0;
    let last = '';
    for (;;) {
      if (child.exitCode !== null) throw new Error(`bare QEMU exited during boot (see ${i.dir}/serial.log)`);
      if (performance.now() > deadline) throw new Error(`bare guest: ssh did not answer (${last})`);
      attempts += 1;
      const r = await sshExec(ssh, { host: '127.0.0.1', port, user: 'root', alias }, 'true', {
        timeoutMs: 15_000,
      });
      if (r.code === 0) break;
      last = r.stderr.trim();
      await sleep(READY_POLL_MS);
    }
    const sshReady = at();
    const times: BareTimes = { disk, seed, vmmSpawned, sshReady, sshAttempts: attempts };
    const k = serial.seenAt.get('kernel');
    if (k !== undefined) times.kernelBooted = Math.round(k - t0);
    const u = marks.get('userspace');
    if (u !== undefined) times.userspace = u;
    const s = marks.get('sshd');
    if (s !== undefined) times.sshd = s;
    const run: BareRun = { times, pid, argv, stop };
    if (i.diagnose) run.profile = await guestProfile(ssh, { host: '127.0.0.1', port, user: 'root', alias });
    return run;
  } catch (err) {
    await stop();
    throw err;
  }
}

async function guestProfile(ssh: SshPaths, t: SshTarget): Promise<GuestProfile> {
  const sh = async (cmd: string): Promise<string> => {
    const r = await sshExec(ssh, t, cmd, { timeoutMs: 120_000 });
    return (r.stdout + (r.code === 0 ? '' : r.stderr)).trim();
  };
  // systemd-analyze needs the boot finished (it may still be starting units after sshd).
  await sh('timeout 90 systemctl is-system-running --wait');
  const dmesg = await sh('dmesg');
  const g = dmesgGaps(dmesg);
  return {
    systemd_analyze: await sh('systemd-analyze'),
    critical_chain: await sh('systemd-analyze critical-chain --no-pager'),
    blame: await sh('systemd-analyze blame --no-pager | head -n 25'),
    dmesg_gaps: g.gaps,
    dmesg_last_s: g.last,
  };
}
