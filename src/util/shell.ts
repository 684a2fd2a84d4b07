// Shell words and exit codes, shared by every layer that hands a line to a POSIX shell (the CLI's
// ssh remote commands, the SSH transport's remote probes, QEMU's `exec:` migration URIs, Slurm's
// node command) or reports a child's death by signal the way a shell does.
import { constants as osConstants } from 'node:os';

/** Characters that mean nothing to a POSIX shell anywhere in a word (no `=`, `~`, `#`, globs, braces). */
const SAFE_WORD = /^[A-Za-z0-9_@%+,./:-]+$/;

/** One word in single quotes, whatever it holds (a `'` becomes `'\''`). */
export function singleQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * Quote argv for a shell so each argument arrives intact (e.g. ssh joins the words of a remote
 * command with spaces and hands the string to the login shell). Safe words are left as they are;
 * anything else is single-quoted; the empty string becomes `''`.
 */
export function shellQuote(args: readonly string[]): string {
  return args.map((a) => (a === '' ? "''" : SAFE_WORD.test(a) ? a : singleQuote(a))).join(' ');
}

/** The exit code for dying of a signal, as shells report it (SIGINT → 130). */
export function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + (osConstants.signals[sig] ?? 0);
}
