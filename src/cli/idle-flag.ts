// --idle-pause-after on vm create and vm run: the VM's own idle_pause_after (docs/snapshots.md
// "Idle pause"), checked here with the daemon's parser so a typo fails before anything is made.
import { Flags } from '@oclif/core';
import { IdleDurationError, parseIdleDuration } from '../vm/idle.ts';
import { usageError } from './vm-ref.ts';

export const idlePauseAfterFlag = Flags.string({
  summary: 'Pause the VM to disk after it has not been used for this long, e.g. 30m (0: never).',
  description:
    'Overrides the daemon’s [vm_defaults] idle_pause_after for this VM. Used means an SSH session (vm ssh, vm exec, also one seen from the host side), a vm touch, a start, resume or workspace call. vm ssh, exec, run and workspace resume an idle-paused VM by themselves (docs/snapshots.md "Idle pause").',
  helpValue: '<duration>',
  parse: async (text: string) => {
    try {
      parseIdleDuration(text);
    } catch (err) {
      if (err instanceof IdleDurationError) throw usageError(`--idle-pause-after: ${err.message}`);
      throw err;
    }
    return text.trim();
  },
});
