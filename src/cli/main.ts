// The `banger` entry. Start-up is most of a short command's time, so this file imports only Node
// built-ins statically: the compile cache must be on before any other module is compiled, the
// fast path (fast-path.ts) answers `ping`, `version` and `--version` without oclif, and oclif is
// loaded only for everything else.
import { enableCompileCache } from 'node:module';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

// Node's module compile cache (V8 code cache on disk, keyed by Node version and file content),
// in the user's cache dir. A cache that cannot be written only costs speed: never an error.
try {
  // XDG: a relative XDG_CACHE_HOME is invalid and ignored.
  const xdg = process.env.XDG_CACHE_HOME;
  const cacheHome = xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.cache');
  enableCompileCache(join(cacheHome, 'banger', 'node-compile-cache'));
} catch {
  // no home, read-only file system: run without the cache
}

// `banger vm list | head`: a closed pipe ends the command quietly.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
});

const [{ hoistGlobalFlags }, { runFastPath }] = await Promise.all([
  import('./argv.ts'),
  import('./fast-path.ts'),
]);
const args = hoistGlobalFlags(process.argv.slice(2));
if (!(await runFastPath(args))) {
  const { execute } = await import('@oclif/core');
  await execute({ dir: import.meta.url, args });
}
