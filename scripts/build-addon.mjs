// Compiles native/peercred.c into build/peercred.node with gcc, against the running node's
// Node-API headers (falling back to /usr/include/node), and native/egress-relay.c into the
// executable build/egress-relay (user-mode egress's guestfwd command, src/egress/relay.ts). Plain JS so it runs on the pinned node
// without type stripping. No node-gyp: it would try to download headers, which we cannot do.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'native', 'peercred.c');
const out = join(root, 'build', 'peercred.node');
const relaySrc = join(root, 'native', 'egress-relay.c');
const relayOut = join(root, 'build', 'egress-relay');
const force = process.argv.includes('--force');

function findOnPath(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

function includeDir() {
  const candidates = [resolve(dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node'];
  const found = candidates.find((d) => existsSync(join(d, 'node_api.h')));
  if (!found) {
    throw new Error(`build-addon: node_api.h not found (looked in ${candidates.join(', ')})`);
  }
  return found;
}

function upToDate(from, to) {
  return !force && existsSync(to) && statSync(to).mtimeMs >= statSync(from).mtimeMs;
}

function gccPath() {
  const gcc = findOnPath('gcc');
  if (!gcc) {
    throw new Error('build-addon: gcc not found on PATH; install it (apt-get install gcc) and retry');
  }
  return gcc;
}

function compile(from, to, flags) {
  mkdirSync(dirname(to), { recursive: true });
  const tmp = `${to}.tmp-${process.pid}`;
  // Outside the try: its own clear error, not "gcc failed to compile".
  const gcc = gccPath();
  try {
    execFileSync(gcc, [...flags, '-O2', '-Wall', '-Wextra', from, '-o', tmp], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
  } catch {
    rmSync(tmp, { force: true });
    throw new Error(`build-addon: gcc failed to compile ${relative(root, from)} (see output above)`);
  }
  // Rename into place so a concurrent loader (or a QEMU starting the relay) never sees a
  // half-written file.
  renameSync(tmp, to);
}

function main() {
  const rel = relative(root, out);
  if (upToDate(src, out)) console.log(`build-addon: ${rel} is up to date`);
  else {
    const inc = includeDir();
    compile(src, out, ['-shared', '-fPIC', `-I${inc}`]);
    console.log(`build-addon: built ${rel} (headers: ${inc})`);
  }
  const relayRel = relative(root, relayOut);
  if (upToDate(relaySrc, relayOut)) console.log(`build-addon: ${relayRel} is up to date`);
  else {
    compile(relaySrc, relayOut, []);
    console.log(`build-addon: built ${relayRel}`);
  }
}

try {
  main();
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
}
