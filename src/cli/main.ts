import { execute } from '@oclif/core';
import { hoistGlobalFlags } from './argv.ts';

// `banger vm list | head`: a closed pipe ends the command quietly.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
});

await execute({ dir: import.meta.url, args: hoistGlobalFlags(process.argv.slice(2)) });
