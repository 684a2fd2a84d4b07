// Compiles native/peercred.c into build/peercred.node with gcc, against the running node's
// Node-API headers (falling back to /usr/include/node). Plain JS so it runs on the pinned node
// without type stripping. No node-gyp: it would try to download headers, which we cannot do.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'native', 'peercred.c');
const out = join(root, 'build', 'peercred.node');
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

function main() {
  const rel = relative(root, out);
  if (!force && existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) {
    console.log(`build-addon: ${rel} is up to date`);
    return;
  }
  const gcc = findOnPath('gcc');
  if (!gcc) {
    throw new Error('build-addon: gcc not found on PATH; install it (apt-get install gcc) and retry');
  }
  const inc = includeDir();
  mkdirSync(dirname(out), { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    execFileSync(gcc, ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', `-I${inc}`, src, '-o', tmp], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
  } catch {
    rmSync(tmp, { force: true });
    throw new Error(`build-addon: gcc failed to compile ${relative(root, src)} (see output above)`);
  }
  // Rename into place so a concurrent loader never sees a half-written library.
  renameSync(tmp, out);
  console.log(`build-addon: built ${rel} (headers: ${inc})`);
}

try {
  main();
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
}
