// Starts the smoke world once per run: a network namespace, bangerd inside it (state in a temp
// dir, images cached under /var/cache/banger keyed by recipe hash so reruns don't rebuild), and
// the default image built (or reused). Everything is removed afterwards.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareFixtures, SMOKE_APT_SOURCES, startSmokeFixtures } from '../fixtures/oci/registry.ts';
import { BIN, ROOT, SMOKE_ENV_FILE, startSmokeDaemon, startSmokeHelper, type SmokeEnv } from './harness.ts';

const IMAGE_CACHE = process.env.BANGER_IMAGE_CACHE ?? '/var/cache/banger';

function sh(argv: string[]): void {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`);
}

export default async function setup(): Promise<() => Promise<void>> {
  if (process.getuid?.() !== 0)
    throw new Error('the smoke suite needs root (it creates a network namespace)');
  // The image build needs Debian's archive, so it runs outside the namespace and fills the
  // recipe-keyed cache; the daemon inside the namespace then finds the build there.
  const t0 = Date.now();
  const prebuild = spawnSync(
    process.execPath,
    [
      join(ROOT, 'scripts/build-image.ts'),
      '--out',
      join(IMAGE_CACHE, 'smoke-prebuilt'),
      '--cache',
      IMAGE_CACHE,
    ],
    { stdio: ['ignore', 'inherit', 'inherit'], timeout: 1_200_000 },
  );
  if (prebuild.status !== 0) throw new Error(`building the default image failed (exit ${prebuild.status})`);
  process.stderr.write(`smoke: image cache ready in ${Math.round((Date.now() - t0) / 1000)} s\n`);
  // The OCI fixtures (images.test.ts): a minbase tarball, a flat apt repository and image layouts,
  // also built from Debian's archive outside the namespace, and cached.
  const t2 = Date.now();
  const ociFixtures = prepareFixtures();
  process.stderr.write(`smoke: OCI fixtures ready in ${Math.round((Date.now() - t2) / 1000)} s\n`);
  const dir = mkdtempSync(join(tmpdir(), 'bsmoke-'));
  const netns = `banger-smoke-${process.pid}`;
  sh(['ip', 'netns', 'add', netns]);
  sh(['ip', 'netns', 'exec', netns, 'ip', 'link', 'set', 'lo', 'up']);
  // Inside the namespace: docker-registry on 127.0.0.1:5000 holding minbase:bookworm, and the apt
  // repository on 127.0.0.1:8787 (the config's apt_sources; the prepare VM reaches it as
  // 10.0.2.2). Stopped by teardown.
  let ociServers: { stop(): Promise<void> } | undefined;
  try {
    ociServers = await startSmokeFixtures(netns, ociFixtures, join(dir, 'oci'));
  } catch (e) {
    spawnSync('ip', ['netns', 'delete', netns]);
    throw e;
  }
  const stateDir = join(dir, 'state');
  const socket = join(dir, 'd.sock');
  const logFile = join(dir, 'bangerd.log');
  const configFile = join(dir, 'config.toml');
  // As on a real install, bangerd (and so every VMM) runs as an unprivileged user the harness
  // creates (BANGER_SMOKE_DAEMON_USER, default banger-smoke; "root" keeps it root, for debugging
  // only). Unprivileged, it cannot write the shared root-owned cache, so it gets a private copy
  // of the prebuilt image's cache entry.
  const wanted = process.env.BANGER_SMOKE_DAEMON_USER ?? 'banger-smoke';
  const daemonUser = wanted === 'root' ? undefined : wanted;
  let daemonCache = IMAGE_CACHE;
  if (daemonUser) {
    const hash = (
      JSON.parse(readFileSync(join(IMAGE_CACHE, 'smoke-prebuilt', 'manifest.json'), 'utf8')) as {
        recipe_hash: string;
      }
    ).recipe_hash;
    if (!/^[0-9a-f]{64}$/.test(hash)) throw new Error(`unexpected recipe hash ${hash}`);
    daemonCache = join(dir, 'cache');
    sh(['mkdir', '-p', join(daemonCache, 'images')]);
    sh(['cp', '-a', '--sparse=always', join(IMAGE_CACHE, 'images', hash), join(daemonCache, 'images', hash)]);
  }
  writeFileSync(
    configFile,
    [
      'accel = "auto"',
      // The helper runs, but existing scenarios stay on user networking; network.test.ts asks
      // for --network bridge explicitly.
      'network = "user"',
      `image_cache_dir = "${daemonCache}"`,
      '[vm_defaults]',
      'vcpus = 2',
      'memory_mib = 768',
      'disk_size = "3G"',
      '[images]',
      `apt_sources = "${SMOKE_APT_SOURCES}"`,
      '',
    ].join('\n'),
  );
  const env: SmokeEnv = {
    netns,
    socket,
    stateDir,
    logFile,
    configFile,
    daemonPid: 0,
    helperSocket: join(dir, 'root', 'helper.sock'),
    helperLogFile: join(dir, 'bangerd-root.log'),
    helperPid: 0,
  };
  const user = daemonUser;
  if (user) {
    // As on a real install: bangerd (and every VMM) unprivileged, only bangerd-root as root.
    if (!/^[a-z][a-z0-9-]{0,30}$/.test(user)) throw new Error(`bad BANGER_SMOKE_DAEMON_USER ${user}`);
    if (spawnSync('id', ['-u', user]).status !== 0)
      sh(['useradd', '--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user]);
    const id = (flag: string): number =>
      Number(spawnSync('id', [flag, user], { encoding: 'utf8' }).stdout.trim());
    env.daemonUser = { name: user, uid: id('-u'), gid: id('-g'), tunNode: join(dir, 'tun') };
    sh(['mknod', '-m', '0600', env.daemonUser.tunNode, 'c', '10', '200']);
    // The scenarios' git trees are root's: the daemon's git trusts them (see startSmokeDaemon).
    writeFileSync(join(dir, 'daemon.gitconfig'), '[safe]\n\tdirectory = *\n', { mode: 0o644 });
    sh(['chown', '-R', `${env.daemonUser.uid}:${env.daemonUser.gid}`, dir]);
  }
  env.helperPid = await startSmokeHelper(env);
  env.daemonPid = await startSmokeDaemon(env);
  writeFileSync(SMOKE_ENV_FILE, JSON.stringify(env));

  // Record the default image in the daemon (a cache hit: no network needed).
  const t1 = Date.now();
  const build = spawnSync(
    'ip',
    ['netns', 'exec', netns, BIN('banger'), 'image', 'build', '--socket', socket],
    {
      stdio: ['ignore', 'inherit', 'inherit'],
      timeout: 1_200_000,
    },
  );
  if (build.status !== 0) {
    // vitest runs no teardown when setup throws: stop the daemon, helper and namespace here.
    await teardown();
    throw new Error(`banger image build failed (exit ${build.status})`);
  }
  process.stderr.write(`smoke: default image recorded in ${Date.now() - t1} ms\n`);
  return teardown;

  async function teardown(): Promise<void> {
    const cur = JSON.parse(readFileSync(SMOKE_ENV_FILE, 'utf8')) as SmokeEnv;
    // Read before the directory goes: a breach of the declared error codes fails the run below.
    const breaches = undeclaredCodeLines([cur.logFile, cur.helperLogFile]);
    // Delete what the scenarios left, then stop the daemon and every VMM it started.
    spawnSync('ip', ['netns', 'exec', netns, BIN('banger'), 'vm', 'prune', '--socket', cur.socket], {
      timeout: 120_000,
    });
    spawnSync('pkill', ['-f', `${stateDir}/vms/`]);
    try {
      process.kill(cur.daemonPid, 'SIGTERM');
    } catch {
      // already gone
    }
    spawnSync('pkill', ['-f', `--state-dir ${stateDir}`]);
    try {
      process.kill(cur.helperPid, 'SIGTERM');
    } catch {
      // already gone
    }
    await ociServers?.stop();
    spawnSync('ip', ['netns', 'delete', netns]);
    if (process.env.BANGER_SMOKE_KEEP !== '1') rmSync(dir, { recursive: true, force: true });
    rmSync(SMOKE_ENV_FILE, { force: true });
    if (breaches.length > 0)
      throw new Error(
        `a daemon answered with an error code its method does not declare (schema/methods.json "errors"):\n${breaches.join('\n')}`,
      );
  }
}

/** The "undeclared error code" lines (src/rpc/error-check.ts) of the given JSON log files. */
function undeclaredCodeLines(files: string[]): string[] {
  return files
    .filter((f) => existsSync(f))
    .flatMap((f) => readFileSync(f, 'utf8').split('\n'))
    .filter((l) => l.includes('"msg":"undeclared error code"'));
}
