// The benchmark's world: a bangerd inside the network namespace this process already runs in
// (main.ts re-executes itself under `flock` + `ip netns exec`), with its state in a temp dir, the
// default image recorded from the recipe-keyed cache, and the real CLI to drive it.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BangerClient } from '../generated/client.gen.ts';
import type { Vm } from '../generated/types.gen.ts';
import { SocketTransport } from '../src/rpc/transport.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BIN = (name: string): string => join(ROOT, 'bin', name);
export const IMAGE_CACHE = process.env.BANGER_IMAGE_CACHE ?? '/var/cache/banger';

/** The VM size every benchmarked VM gets (the daemon's defaults). */
export const VM_DEFAULTS = { vcpus: 2, memoryMib: 1024, diskSize: '4G' } as const;

export interface World {
  dir: string;
  stateDir: string;
  socket: string;
  logFile: string;
  daemonPid: number;
  /** bangerd-root's pid when the world has one (bridged networking; see startWorld). */
  helperPid?: number;
  client: BangerClient;
  /** Progress lines on stderr. */
  say: (line: string) => void;
}

export interface CmdResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Run a command (argv, no shell), timing it from spawn to exit. */
export function runCmd(argv: string[], opts: { timeoutMs?: number } = {}): Promise<CmdResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    p.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: `${stderr}${err.message}`, ms: performance.now() - t0 });
    });
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

/** `banger ARGS --socket S` with the real CLI. */
export function banger(w: World, args: string[], opts: { timeoutMs?: number } = {}): Promise<CmdResult> {
  return runCmd([BIN('banger'), ...args, '--socket', w.socket], opts);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** The bench's bridge subnet and its gateway (the bridge's address: banger's resolver and proxy). */
export const BENCH_BRIDGE_CIDR = '10.213.0.0/24';
export const BENCH_BRIDGE_GATEWAY = '10.213.0.1';

/**
 * Start bangerd (in this namespace) and record the default image. `helper`: also a bangerd-root
 * in this namespace (as the smoke suite does), so bridged VMs can be made; the bridge, its taps
 * and nftables chains then live in the namespace and go with it. VMs stay on user networking
 * unless a part asks for `--network bridge`.
 */
export async function startWorld(
  say: (line: string) => void,
  opts: { helper?: boolean } = {},
): Promise<World> {
  if (!existsSync(join(ROOT, 'dist/src/daemon/main.js'))) {
    throw new Error('banger is not built: run npm run build (npm run bench does it first)');
  }
  const dir = mkdtempSync('/tmp/bbench-');
  const stateDir = join(dir, 'state');
  const socket = join(dir, 'd.sock');
  const logFile = join(dir, 'bangerd.log');
  const configFile = join(dir, 'config.toml');
  // accel = "auto": what users get. The probe (a test boot, ~10 s on a host whose KVM cannot run
  // the guest) runs on the first boot; the warm-up create pays it before anything is measured.
  writeFileSync(
    configFile,
    [
      'accel = "auto"',
      `image_cache_dir = "${IMAGE_CACHE}"`,
      'network = "user"',
      `bridge_cidr = "${BENCH_BRIDGE_CIDR}"`,
      '[vm_defaults]',
      `vcpus = ${VM_DEFAULTS.vcpus}`,
      `memory_mib = ${VM_DEFAULTS.memoryMib}`,
      `disk_size = "${VM_DEFAULTS.diskSize}"`,
      '',
    ].join('\n'),
  );
  const out = openSync(join(dir, 'bangerd.stderr'), 'a');
  const helperSocket = join(dir, 'root', 'helper.sock');
  let helperPid: number | undefined;
  if (opts.helper) {
    const helper = spawn(
      BIN('bangerd-root'),
      [
        '--socket',
        helperSocket,
        '--owner-uid',
        String(process.getuid?.() ?? 0),
        '--log-file',
        join(dir, 'bangerd-root.log'),
      ],
      { stdio: ['ignore', out, out], detached: true },
    );
    helper.unref();
    helperPid = helper.pid;
    await waitFor(() => existsSync(helperSocket), 30_000, 'the bangerd-root socket');
  }
  const daemon = spawn(
    BIN('bangerd'),
    [
      '--socket',
      socket,
      '--state-dir',
      stateDir,
      '--log-file',
      logFile,
      '--config',
      configFile,
      '--helper-socket',
      opts.helper ? helperSocket : 'none',
    ],
    { stdio: ['ignore', out, out], detached: true },
  );
  daemon.unref();
  const w: World = {
    dir,
    stateDir,
    socket,
    logFile,
    daemonPid: daemon.pid!,
    ...(helperPid !== undefined ? { helperPid } : {}),
    client: new BangerClient(new SocketTransport(socket)),
    say,
  };
  try {
    await waitFor(() => existsSync(socket), 30_000, 'the bangerd socket');
    const t0 = performance.now();
    const built = await banger(w, ['image', 'build', '--json'], { timeoutMs: 1_200_000 });
    if (built.code !== 0)
      throw new Error(`banger image build failed: ${(built.stdout + built.stderr).trim()}`);
    say(`default image recorded in ${Math.round(performance.now() - t0)} ms`);
    return w;
  } catch (err) {
    if (pidAlive(w.daemonPid)) process.kill(w.daemonPid, 'SIGTERM');
    if (w.helperPid !== undefined && pidAlive(w.helperPid)) process.kill(w.helperPid, 'SIGTERM');
    say(`kept ${dir} (bangerd.log, bangerd.stderr)`);
    throw err;
  }
}

/** Delete every VM the daemon knows (their VMMs stop), then stop the daemon and remove the dir. */
export async function stopWorld(w: World, opts: { keep?: boolean } = {}): Promise<void> {
  await deleteAllVms(w).catch((err: unknown) => w.say(`cleanup: ${String(err)}`));
  // A VM the daemon would not delete (e.g. busy creating when interrupted): stop its VMM.
  for (const vm of await listVms(w).catch(() => [] as Vm[])) {
    if (vm.pid !== undefined && pidAlive(vm.pid)) process.kill(vm.pid, 'SIGKILL');
  }
  try {
    process.kill(w.daemonPid, 'SIGTERM');
    await waitFor(() => !pidAlive(w.daemonPid), 15_000, 'bangerd to exit').catch(() =>
      process.kill(w.daemonPid, 'SIGKILL'),
    );
  } catch {
    // already gone
  }
  // After the daemon: it asks the helper to remove its taps and chains as VMs go.
  if (w.helperPid !== undefined && pidAlive(w.helperPid)) process.kill(w.helperPid, 'SIGTERM');
  if (!opts.keep) rmSync(w.dir, { recursive: true, force: true });
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function listVms(w: World): Promise<Vm[]> {
  return (await w.client.vm.list({})).vms;
}

export async function deleteVm(w: World, name: string): Promise<void> {
  await w.client.vm.delete({ name });
}

/** Delete every VM; one that cannot be deleted does not stop the others. */
export async function deleteAllVms(w: World): Promise<void> {
  const errors: string[] = [];
  for (const vm of await listVms(w)) {
    await deleteVm(w, vm.name).catch((err: unknown) => errors.push(String(err)));
  }
  if (errors.length > 0) throw new Error(errors.join('; '));
}

/** VM ids (directory names) under the state dir right now. */
export async function vmDirs(w: World): Promise<Set<string>> {
  return new Set(await readdir(join(w.stateDir, 'vms')).catch(() => [] as string[]));
}
