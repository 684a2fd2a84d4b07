// npm run bench [-- --quick] [-- --parts boot,rpc,...] [-- --pairs N] [-- --name NAME]
//
// Measures banger against baselines taken in the same run (see docs/bench.md): create → SSH
// ready by stage against a bare QEMU, RPC against a minimal socket server, copy-on-write disk
// preparation from small and huge bases, footprint, parallel against sequential creates, and
// warm (restored from a warm template) against cold creates, the CLI's start-up against
// `node -e 0`, what one idle VM costs (CPU, Rss/Pss, memory given back after a burst), and an
// OCI pull + convert against `skopeo copy` + `tar -x` from a loopback registry, a VM paused to
// disk and resumed against a cold create, and the memory of idle clones of one warm template
// against idle cold VMs, and a 100 MiB download in a guest under `--egress allow=` against one
// under `--egress all`.
// Writes bench/results/NAME.json (with the machine's description) and prints Markdown.
//
// It runs itself twice: the outer process (root) fills the image cache (that needs Debian's
// archive), creates a network namespace, takes /tmp/banger-vm.lock (flock: one engineer boots VMs
// at a time) and re-runs this file inside the namespace; the inner one starts bangerd there and
// measures. Every VM's traffic stays inside the namespace. `--parts cli` and `--parts pull` need
// none of that (no VM, no bangerd): asked for alone, they run here, at once.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { recipeHash } from '../src/image/recipe.ts';
import { guestCmdline, READY_POLL_MS } from '../src/vm/machine.ts';
import {
  bangerCreate,
  defaultBootInputs,
  imageDirInputs,
  runBootPairs,
  runGuestAb,
  type GuestVariant,
  summarizeBoot,
} from './boot.ts';
import { runCli } from './cli.ts';
import { runCow } from './cow.ts';
import { runDensity } from './density.ts';
import {
  concurrencyResult,
  measureFootprint,
  parallelCreates,
  sampleRssMiB,
  sequentialCreates,
} from './fleet.ts';
import { runIdle } from './idle.ts';
import { preparedFixtures, prepareFixtures } from '../test/fixtures/oci/registry.ts';
import { pullFixture, type PullFixture, type PullScale } from './pull-image.ts';
import { runPull } from './pull.ts';
import { describeMachine } from './machine.ts';
import { markdownSummary, type BenchResults } from './report.ts';
import { runRpc } from './rpc.ts';
import { runEgress } from './egress.ts';
import { runFork } from './fork.ts';
import { runResume } from './resume.ts';
import { readVariants, type VariantSpec } from './variants.ts';
import { runWarm } from './warm.ts';
import { deleteVm, IMAGE_CACHE, ROOT, startWorld, stopWorld, VM_DEFAULTS, type World } from './world.ts';

const PARTS = [
  'boot',
  'rpc',
  'cow',
  'idle',
  'footprint',
  'concurrency',
  'warm',
  'resume',
  'fork',
  'egress',
  'density',
  'guest-ab',
  'cli',
  'pull',
] as const;
type Part = (typeof PARTS)[number];
/** What runs without --parts (guest-ab needs --baseline-image or --variants). */
const DEFAULT_PARTS: Part[] = [
  'cli',
  'pull',
  'boot',
  'rpc',
  'cow',
  'idle',
  'footprint',
  'concurrency',
  'resume',
  'fork',
  'egress',
  'warm',
  'density',
];
/** Parts that need no namespace, daemon or VM: asked for alone, they run without them. */
const STANDALONE_PARTS: readonly Part[] = ['cli', 'pull'];
/** Parts that boot no VM (no warm-up create before them). */
const NO_BOOT_PARTS: readonly Part[] = ['cli', 'pull', 'rpc', 'cow'];
const LOCK = '/tmp/banger-vm.lock';

const USAGE = `usage: npm run bench -- [--quick] [--parts LIST] [--pairs N] [--name NAME] [--no-save] [--keep]

  --quick        reduced run for development (2 boot pairs, fewer calls, 2-3 VMs); never commit it
  --parts LIST   comma-separated subset of ${PARTS.join(',')}
                 (default: ${DEFAULT_PARTS.join(',')}; --baseline-image or --variants add guest-ab)
  --baseline-image DIR
                 guest-ab: boot this image directory (vmlinuz, initrd.cpio.gz, rootfs.ext4) bare,
                 alternating with the current default image, to measure a guest-side change
  --baseline-cmdline CMDLINE
                 guest-ab: the baseline's kernel command line, NAME standing for the VM name
                 (default: the current one; a results file's config.guest_cmdline fits)
  --variants FILE
                 guest-ab with any number of guests: a JSON array of
                 {"label", "image"?: DIR, "cmdline"?: CMDLINE, "qemu_args"?: [...]}, the first
                 being the reference (image and cmdline default to the current ones)
  --pairs N      boot pairs (banger, bare), warm pairs (cold, warm create), resume repetitions
                 (cold create, pause + resume) and egress repetitions (a download under all, under
                 allow=) to run, alternating which goes first (default 5, quick 2)
  --clones N     density: idle VMs on each side (clones of one template, cold VMs; default 4,
                 quick 2)
  --rounds N     cli: rounds of node -e 0, banger --version, banger ping (default 20, quick 5)
  --pull-scale S pull: full (a ≈300 MB image; the default) or small (≈30 MB; the default of --quick)
  --pull-reps N  pull: repetitions of each side, alternating which goes first (default 3, quick 2)
  --name NAME    results file bench/results/NAME.json (default: the start time, quick- prefixed)
  --no-save      print only
  --note TEXT    recorded in the results' notes (repeatable): what this run is
  --keep         keep the temp dir (daemon state, logs, serial consoles) for inspection

Needs root (network namespace), qemu-system-x86_64, and a built tree (npm run bench builds);
--parts cli alone needs only the built tree; --parts pull alone needs docker-registry and skopeo
(and, for the full image, the OCI test fixtures' minbase tarball: root makes it).`;

/** A bad command line: reported as one line and exit code 2, without a stack. */
class UsageError extends Error {}

function options(): {
  quick: boolean;
  parts: Part[];
  pairs: number;
  rounds: number;
  pullScale: PullScale;
  pullReps: number;
  clones: number;
  name: string;
  save: boolean;
  keep: boolean;
  variants?: VariantSpec[];
  notes: string[];
} {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      parts: { type: 'string' },
      pairs: { type: 'string' },
      rounds: { type: 'string' },
      'pull-scale': { type: 'string' },
      'pull-reps': { type: 'string' },
      clones: { type: 'string' },
      name: { type: 'string' },
      'no-save': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      'baseline-image': { type: 'string' },
      'baseline-cmdline': { type: 'string' },
      variants: { type: 'string' },
      note: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const parts = (values.parts ?? DEFAULT_PARTS.join(',')).split(',').map((p) => p.trim());
  for (const p of parts) {
    if (!(PARTS as readonly string[]).includes(p))
      throw new UsageError(`--parts: unknown part "${p}" (${PARTS.join(', ')})`);
  }
  let variants: VariantSpec[] | undefined;
  if (values.variants !== undefined) {
    try {
      variants = readVariants(values.variants);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  } else if (values['baseline-image'] !== undefined) {
    const baseline: VariantSpec = { label: 'baseline', image: resolve(values['baseline-image']) };
    if (values['baseline-cmdline'] !== undefined) baseline.cmdline = values['baseline-cmdline'];
    variants = [baseline, { label: 'current' }];
  }
  if (variants && !parts.includes('guest-ab')) parts.push('guest-ab');
  if (parts.includes('guest-ab') && !variants)
    throw new UsageError('--parts guest-ab needs --baseline-image DIR or --variants FILE');
  const pairs = values.pairs === undefined ? (values.quick ? 2 : 5) : Number(values.pairs);
  if (!Number.isInteger(pairs) || pairs < 1) throw new UsageError('--pairs must be a positive integer');
  const rounds = values.rounds === undefined ? (values.quick ? 5 : 20) : Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new UsageError('--rounds must be a positive integer');
  const pullScale = values['pull-scale'] ?? (values.quick ? 'small' : 'full');
  if (pullScale !== 'full' && pullScale !== 'small') throw new UsageError('--pull-scale: full or small');
  const pullReps = values['pull-reps'] === undefined ? (values.quick ? 2 : 3) : Number(values['pull-reps']);
  if (!Number.isInteger(pullReps) || pullReps < 1)
    throw new UsageError('--pull-reps must be a positive integer');
  const clones = values.clones === undefined ? (values.quick ? 2 : 4) : Number(values.clones);
  if (!Number.isInteger(clones) || clones < 1) throw new UsageError('--clones must be a positive integer');
  const stamp = new Date()
    .toISOString()
    .replace(/[:.]/g, '-')
    .replace(/-\d{3}Z$/, 'Z');
  const name = values.name ?? (values.quick ? `quick-${stamp}` : stamp);
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(name))
    throw new UsageError('--name: letters, digits, dot, dash, underscore');
  const o: ReturnType<typeof options> = {
    quick: values.quick,
    parts: parts as Part[],
    pairs,
    rounds,
    pullScale,
    pullReps,
    clones,
    name,
    save: !values['no-save'],
    keep: values.keep,
    notes: values.note ?? [],
  };
  if (variants) o.variants = variants;
  return o;
}

/** The results file's frame, before any part ran. */
function newResults(o: ReturnType<typeof options>, started: Date): BenchResults {
  return {
    format: 1,
    name: o.name,
    mode: o.quick ? 'quick' : 'full',
    started_at: started.toISOString(),
    duration_s: 0,
    machine: describeMachine(),
    config: {
      vcpus: VM_DEFAULTS.vcpus,
      memory_mib: VM_DEFAULTS.memoryMib,
      disk_size: VM_DEFAULTS.diskSize,
      network: 'user',
      accel_config: 'auto',
      ready_poll_ms: READY_POLL_MS,
      guest_cmdline: guestCmdline({ name: 'NAME', networkMode: 'user' }),
      image_recipe_hash: recipeHash(),
    },
    notes: [...o.notes],
    errors: [],
  };
}

/** Notes on the run's kind, then the results file (unless --no-save) and the summary. */
function finish(o: ReturnType<typeof options>, results: BenchResults, say: (l: string) => void): number {
  if (o.quick) results.notes.push('quick run: reduced sample sizes; not for comparison or commit');
  if (results.errors.length > 0) results.notes.push('incomplete run: see errors');
  if (o.save) {
    const dir = join(ROOT, 'bench/results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${o.name}.json`);
    writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
    say(`results written to ${file}`);
  }
  process.stdout.write(markdownSummary(results));
  return results.errors.length > 0 ? 1 : 0;
}

/**
 * The pull part's images (generated once, cached). The full one starts from the OCI test
 * fixtures' minbase tarball: made here by prepare.sh when missing (root, outside any namespace).
 */
async function ensurePullFixture(
  o: ReturnType<typeof options>,
  say: (l: string) => void,
): Promise<PullFixture> {
  let minbase: string | undefined;
  if (o.pullScale === 'full') {
    const canPrepare = process.getuid?.() === 0 && process.env.BANGER_BENCH_INSIDE === undefined;
    const fx = preparedFixtures() ?? (canPrepare ? prepareFixtures() : undefined);
    if (!fx)
      throw new Error(
        'the full pull image needs the OCI test fixtures: run test/fixtures/oci/prepare.sh as root',
      );
    minbase = fx.minbaseTarGz;
  }
  return pullFixture({ scale: o.pullScale, minbaseTarGz: minbase, say });
}

async function pullPart(o: ReturnType<typeof options>, dir: string, say: (l: string) => void) {
  const fixture = await ensurePullFixture(o, say);
  const mb = (n: number): string => (n / 1e6).toFixed(0);
  say(
    `pull: ${fixture.scale} image (${mb(fixture.first.compressed)} MB compressed, ` +
      `${mb(fixture.first.uncompressed)} MB in ${fixture.layers.length - 1} layers): banger pull + convert ` +
      `against skopeo copy + tar -x, ${o.pullReps} alternating repetitions, then a second image`,
  );
  return runPull({ fixture, reps: o.pullReps, dir, say });
}

// ---- standalone: parts that need no root, namespace or daemon ------------------------------

async function standalone(): Promise<number> {
  const o = options();
  const say = (l: string): void => void process.stderr.write(`bench: ${l}\n`);
  const t0 = performance.now();
  const results = newResults(o, new Date());
  const dir = mkdtempSync('/tmp/bbench-');
  const part = async (name: Part, fn: () => Promise<void>): Promise<void> => {
    if (!o.parts.includes(name)) return;
    try {
      await fn();
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      results.errors.push({ part: name, error });
      say(`${name} FAILED: ${error}`);
    }
  };
  try {
    await part('cli', async () => {
      say(`CLI start-up: ${o.rounds} rounds of node -e 0, banger --version, banger ping (order rotated)`);
      results.cli = await runCli({ rounds: o.rounds, dir, say });
    });
    await part('pull', async () => {
      results.pull = await pullPart(o, dir, say);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
    results.machine.load_average_end = loadavg().map((x) => Math.round(x * 100) / 100);
    results.duration_s = Math.round((performance.now() - t0) / 1000);
  }
  return finish(o, results, say);
}

// ---- outer: image cache, namespace, lock ------------------------------------------------------

async function outer(): Promise<number> {
  const o = options(); // validate before doing anything
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root: it creates a network namespace');
  const say = (l: string): void => void process.stderr.write(`bench: ${l}\n`);
  if (o.parts.includes('pull')) {
    // Outside the namespace: the fixtures' minbase tarball comes from Debian's archive. A failure
    // here fails the part inside (recorded in errors), not the run.
    await ensurePullFixture(o, say).catch((e: unknown) => say(`pull images: ${(e as Error).message}`));
  }
  say('filling the image cache (a cache hit when the recipe is unchanged)');
  const built = spawnSync(
    process.execPath,
    [
      join(ROOT, 'scripts/build-image.ts'),
      '--out',
      join(IMAGE_CACHE, 'bench-prebuilt'),
      '--cache',
      IMAGE_CACHE,
    ],
    { stdio: ['ignore', 'inherit', 'inherit'], timeout: 1_200_000 },
  );
  if (built.status !== 0) throw new Error(`building the default image failed (exit ${built.status})`);

  const netns = `banger-bench-${process.pid}`;
  const ip = (args: string[]): void => {
    const r = spawnSync('ip', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
  };
  ip(['netns', 'add', netns]);
  try {
    ip(['netns', 'exec', netns, 'ip', 'link', 'set', 'lo', 'up']);
    say(`network namespace ${netns}; waiting for ${LOCK} if another run boots VMs`);
    // The lock is taken on an open file description this process keeps: flock(1) locks the fd it
    // is handed, and the lock lives as long as the description, so the inner run (spawned
    // directly, its pid known for signals) needs no wrapper.
    const lockFd = openSync(LOCK, 'a', 0o666);
    const locked = spawnSync('flock', ['--exclusive', '3'], {
      stdio: ['ignore', 'inherit', 'inherit', lockFd],
    });
    if (locked.status !== 0) throw new Error(`flock ${LOCK} failed (exit ${locked.status})`);
    const child = spawn(
      'ip',
      ['netns', 'exec', netns, process.execPath, join(ROOT, 'bench/main.ts'), ...process.argv.slice(2)],
      { stdio: 'inherit', env: { ...process.env, BANGER_BENCH_INSIDE: netns } },
    );
    // Ctrl-C reaches the inner run too (same process group); it cleans up and exits.
    const ignore = (): void => undefined;
    process.on('SIGINT', ignore);
    process.on('SIGTERM', () => child.kill('SIGINT'));
    const code = await new Promise<number>((r) => child.on('close', (c) => r(c ?? 1)));
    process.off('SIGINT', ignore);
    return code;
  } finally {
    // Anything the inner run left in the namespace is ours: stop those pids, then drop it.
    const pids = spawnSync('ip', ['netns', 'pids', netns], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone
      }
    }
    spawnSync('ip', ['netns', 'delete', netns]);
  }
}

// ---- inner: inside the namespace, holding the lock -----------------------------------------

async function inner(netns: string): Promise<number> {
  const o = options();
  const say = (l: string): void => void process.stderr.write(`bench: ${l}\n`);
  const started = new Date();
  const t0 = performance.now();
  // The egress part measures bridged mode too: that needs the root helper (in this namespace).
  const w: World = await startWorld(say, { helper: o.parts.includes('egress') });
  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) return;
    interrupted = true;
    say('interrupted: cleaning up');
    void stopWorld(w, { keep: o.keep }).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  say(`state in ${w.dir} (namespace ${netns})`);
  const results = newResults(o, started);
  // A part that fails is recorded and the run goes on: a long run is never lost to one failure.
  const part = async (name: Part, fn: () => Promise<void>): Promise<void> => {
    if (!o.parts.includes(name)) return;
    try {
      await fn();
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      results.errors.push({ part: name, error });
      say(`${name} FAILED: ${error}`);
    }
  };
  try {
    const boots = o.parts.some((p) => !NO_BOOT_PARTS.includes(p));
    let accel: 'kvm' | 'tcg' = 'tcg';
    if (boots) {
      // Warm-up, not measured: pays the accelerator probe (a test boot; about 10 s on a host whose
      // KVM cannot run the guest), fills the page cache with the image, and JIT-warms bangerd.
      say('warm-up create (accelerator probe, page cache); not measured');
      await bangerCreate(w, 'warmup');
      const status = await w.client.daemon.status();
      const chosen = status.engine?.accel;
      if (!chosen || chosen === 'probing')
        throw new Error('the daemon did not report an accelerator after a boot');
      accel = chosen;
      results.machine.accel = accel;
      if (status.engine?.accel_reason) results.machine.accel_reason = status.engine.accel_reason;
    }
    const images = (await w.client.image.list()).images;
    const def = images.find((i) => i.default);
    if (def) results.config.kernel_version = def.kernel_version;
    // The image the daemon really boots (its recipe hash, when it built it).
    if (def?.recipe_hash) results.config.image_recipe_hash = def.recipe_hash;
    const idleRss = await sampleRssMiB(w.daemonPid);
    say(`${boots ? `accelerator ${accel}; ` : ''}bangerd idle RSS ${idleRss} MiB`);
    const inputs = await defaultBootInputs(w, accel);

    await part('cli', async () => {
      say(`CLI start-up: ${o.rounds} rounds of node -e 0, banger --version, banger ping (order rotated)`);
      results.cli = await runCli({ rounds: o.rounds, dir: w.dir, say });
    });
    // Before any VM boots: it is CPU-bound on the host, like the boots.
    await part('pull', async () => {
      results.pull = await pullPart(o, w.dir, say);
    });
    await part('rpc', async () => {
      say('RPC: ping against bangerd and against the floor');
      results.rpc = await runRpc(
        w,
        o.quick ? { callsSingle: 300, callsPerClient32: 20 } : { callsSingle: 3000, callsPerClient32: 150 },
      );
    });
    await part('cow', async () => {
      say('copy-on-write: overlays on a 200 MiB, a 10 GiB sparse and the default base');
      results.cow = await runCow(w, { reps: o.quick ? 5 : 20, defaultRootfs: inputs.rootfs });
    });
    await part('boot', async () => {
      say(`create → SSH ready: ${o.pairs} alternating pairs (banger, bare QEMU)`);
      const { pairs, bareArgv, profile } = await runBootPairs(w, inputs, o.pairs, 'boot');
      results.boot = { summary: summarizeBoot(pairs), pairs, bare_argv: bareArgv };
      if (profile) results.boot.guest_profile = profile;
    });
    await part('guest-ab', async () => {
      const specs = o.variants!;
      say(`guest A/B: ${o.pairs} rounds of bare boots of ${specs.map((v) => v.label).join(', ')}`);
      const variants: GuestVariant[] = specs.map((v) => {
        const b = v.image ? imageDirInputs(v.image, accel, v.cmdline) : { ...inputs };
        if (!v.image && v.cmdline !== undefined) b.cmdlineTemplate = v.cmdline;
        if (v.qemu_args) b.qemuArgs = v.qemu_args;
        return { ...b, label: v.label };
      });
      results.guest_ab = await runGuestAb(w, variants, o.pairs);
    });
    // Alone: before the fleet parts start VMs, after the boot pairs deleted theirs.
    await part('idle', async () => {
      say("idle: one VM alone, its VMM's CPU over quiet windows, Rss/Pss, and after a memory burst");
      results.idle = await runIdle(
        w,
        o.quick
          ? { settleMs: 10_000, windowMs: 30_000, samples: 1, burstMib: 600 }
          : { settleMs: 20_000, windowMs: 60_000, samples: 3, burstMib: 600 },
      );
    });
    const n = o.quick ? 2 : 4;
    let seq: { wall: number; each: number[] } | undefined;
    // n creates in sequence, left running: the concurrency baseline and most of the footprint.
    if (o.parts.includes('concurrency') || o.parts.includes('footprint')) {
      await part(o.parts.includes('concurrency') ? 'concurrency' : 'footprint', async () => {
        say(`${n} creates in sequence (left running)`);
        seq = await sequentialCreates(w, n, 'seq');
      });
    }
    await part('footprint', async () => {
      const want = o.quick ? 3 : 5;
      for (let i = (await w.client.vm.list({})).vms.length; i < want; i++) {
        say(`one more VM for the footprint (${i + 1} of ${want})`);
        await sequentialCreates(w, 1, `foot${i}`);
      }
      say(`footprint with ${want} idle VMs`);
      results.footprint = await measureFootprint(w, idleRss, {
        settleMs: o.quick ? 10_000 : 30_000,
        cpuWindowMs: 10_000,
      });
    });
    for (const vm of (await w.client.vm.list({})).vms) await deleteVm(w, vm.name);
    if (seq) {
      const sequential = seq;
      await part('concurrency', async () => {
        say(`${n} creates in parallel`);
        const par = await parallelCreates(w, n, 'par');
        results.concurrency = concurrencyResult(n, sequential, par);
      });
    }
    // Before warm: its cold creates must not find a template (they are --cold anyway).
    await part('resume', async () => {
      say(`resume: ${o.pairs} alternating repetitions (cold create; vm pause + vm resume of one VM)`);
      results.resume = await runResume(w, { reps: o.pairs, tag: 'resume' });
    });
    // Before warm too: the forks' baseline is a cold create.
    await part('fork', async () => {
      say(
        `fork: ${o.pairs} repetitions each of vm fork into 1 and 4 children, alternating with cold creates`,
      );
      results.fork = await runFork(w, { reps: o.pairs, tag: 'fork' });
    });
    // Two kept VMs created --cold (so before or after warm alike); a download in each per repetition.
    await part('egress', async () => {
      const mib = o.quick ? 20 : 100;
      say(
        `egress: ${o.pairs} alternating ${mib} MiB downloads in a guest under --egress all and one under allow=`,
      );
      results.egress = await runEgress(w, {
        reps: o.pairs,
        mib,
        tag: 'egress',
        bridged: w.helperPid !== undefined,
      });
    });
    // Last: once the template exists, every plain `vm create` of this spec restores from it.
    await part('warm', async () => {
      say(`warm start: the template, then ${o.pairs} alternating pairs (cold create, warm create)`);
      results.warm = await runWarm(w, { pairs: o.pairs, concurrent: 2, tag: 'warm' });
      // The targets are about a median of at least 5 pairs and the worst of them (issue 14).
      if (o.pairs < 5) results.notes.push(`warm: ${o.pairs} pairs, fewer than 5: not a robust figure`);
    });
    // After warm: it finds the template the warm part made (or builds it).
    await part('density', async () => {
      say(`density: ${o.clones} idle clones of one warm template against ${o.clones} idle cold VMs`);
      results.density = await runDensity(w, {
        n: o.clones,
        settleMs: o.quick ? 10_000 : 20_000,
        tag: 'dens',
      });
    });
  } finally {
    results.machine.load_average_end = loadavg().map((x) => Math.round(x * 100) / 100);
    results.duration_s = Math.round((performance.now() - t0) / 1000);
    // After a failure the daemon's state and logs (and the VMs' consoles) stay for a look.
    const keep = o.keep || results.errors.length > 0;
    if (!interrupted) await stopWorld(w, { keep });
    if (keep) say(`kept ${w.dir} (bangerd.log, state/vms/*/serial.log, bare/*/serial.log)`);
  }
  return finish(o, results, say);
}

const inside = process.env.BANGER_BENCH_INSIDE;
// Async, so a bad command line (options() throws) is reported by the handler below.
const run = async (): Promise<number> => {
  if (inside) return inner(inside);
  return options().parts.every((p) => STANDALONE_PARTS.includes(p)) ? standalone() : outer();
};
run().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError || (err instanceof TypeError && 'code' in err)) {
      // parseArgs reports unknown or malformed options as a TypeError with an ERR_PARSE_ARGS_* code.
      process.stderr.write(`bench: ${err.message} (see --help)\n`);
      process.exit(2);
    }
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
