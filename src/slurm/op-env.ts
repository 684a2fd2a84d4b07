// The op id a caller hands to `banger vm run` through the environment (BANGER_OP_ID): `banger slurm
// run` mints one on the submit host and the job's vm run on the node uses it for its calls, so the
// node's `banger op trace OP` finds the sandbox by the id in the job's comment.
import { OP_ID_PATTERN } from '../rpc/envelope.ts';
import { OP_ID_ENV } from './job.ts';

/** BANGER_OP_ID when it is a well-formed op id; otherwise undefined (the daemon mints one). */
export function opIdFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env[OP_ID_ENV];
  return v !== undefined && OP_ID_PATTERN.test(v) ? v : undefined;
}
