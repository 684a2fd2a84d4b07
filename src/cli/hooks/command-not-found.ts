// oclif's command_not_found hook (registered in package.json): an unknown command is a usage
// error like any other, `error: unknown command "vm lst"; did you mean "vm list"?` on stderr (or
// the --json error object on stdout), exit 2.
import type { Hook } from '@oclif/core';
import { suggestCommand, unknownCommandMessage } from '../not-found.ts';
import { usageError } from '../vm-ref.ts';
import { exitCodeFor } from '../exit-codes.ts';

const hook: Hook<'command_not_found'> = function (opts) {
  const s = suggestCommand(
    opts.id,
    opts.config.commandIDs,
    opts.config.topics.map((t) => t.name),
  );
  const err = usageError(unknownCommandMessage(s, opts.config.bin));
  const exit = exitCodeFor(err.code);
  process.exitCode = exit;
  if (opts.argv?.includes('--json')) {
    const payload = { ok: false, exit_code: exit, error: { code: err.code, message: err.bareMessage } };
    process.stdout.write(`${JSON.stringify(payload, null, 2)}\n`);
  } else {
    process.stderr.write(`error: ${err.bareMessage}\n`);
  }
  return Promise.resolve();
};

export default hook;
