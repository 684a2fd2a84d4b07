// TEST-ONLY crash points (env BANGER_TEST_CRASH_AT=<point>, read once at daemon start): the daemon
// SIGKILLs itself when the named step begins, so the smoke suite can check that a restarted
// daemon finishes or undoes whatever was in flight (test/smoke/crash.test.ts). Points are
// `<kind>.<step>`: `vm.create.boot`, `image.warm.save`, `vm.start.wait_ready`, `vm.stop.shutdown`,
// `vm.delete.files`, … (docs/lifecycle.md lists them all). Off (undefined) in normal use.
import { writeSync } from 'node:fs';
import type { Logger } from '../log/logger.ts';

export type CrashPoint = (point: string) => void;

export function crashPoints(at: string | undefined, log: Logger): CrashPoint {
  if (!at) return () => undefined;
  log.warn(
    { crash_at: at },
    'TEST-ONLY: the daemon kills itself when this step begins (BANGER_TEST_CRASH_AT)',
  );
  return (point) => {
    if (point !== at) return;
    log.fatal({ crash_at: point }, 'TEST-ONLY: crashing now (BANGER_TEST_CRASH_AT)');
    // stderr is unbuffered; the log file may not be: say it where the harness reads it too.
    try {
      writeSync(2, `bangerd: TEST-ONLY crash at ${point}\n`);
    } catch {
      // nothing to report to
    }
    process.kill(process.pid, 'SIGKILL');
  };
}
