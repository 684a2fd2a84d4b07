import { execute } from '@oclif/core';
import { hoistGlobalFlags } from './argv.ts';

await execute({ dir: import.meta.url, args: hoistGlobalFlags(process.argv.slice(2)) });
