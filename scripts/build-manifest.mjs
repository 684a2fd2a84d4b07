// Writes oclif.manifest.json from the built commands (dist/src/cli/commands), as `oclif manifest`
// would: with it, the CLI finds a command and its flags without importing every command module
// at start-up (about 60 ms of every banger invocation here). Run by `npm run build`; the file is
// generated (git-ignored) and always rewritten with the build, so it cannot go stale.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Plugin } from '@oclif/core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const plugin = new Plugin({ root, type: 'core', ignoreManifest: true, errorOnManifestCreate: true });
await plugin.load();
const count = Object.keys(plugin.manifest.commands).length;
if (count === 0) throw new Error('build-manifest: no commands found (is dist/ built?)');
writeFileSync(join(root, 'oclif.manifest.json'), `${JSON.stringify(plugin.manifest)}\n`);
console.log(`build-manifest: ${count} commands in oclif.manifest.json`);
