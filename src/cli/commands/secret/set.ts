import { Args } from '@oclif/core';
import type { SecretSetResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { readSecretValue } from '../../secret-input.ts';

export default class SecretSet extends BangerCommand {
  static override summary = 'Store a secret for VMs to use without ever holding it.';
  static override description = `Reads the value from stdin: piped, everything up to EOF minus one trailing newline; on a terminal, one line typed without echo. The daemon stores it 0600 in its state directory; it is never logged, printed or returned. A VM created with --secret NAME@HOST gets an environment variable NAME holding a placeholder, which banger's egress proxy replaces with the value in requests to HOST (docs/egress.md). Setting an existing secret replaces its value for every VM that uses it.`;
  static override examples = [
    'printf %s "$OPENAI_API_KEY" | <%= config.bin %> secret set OPENAI_API_KEY',
    '<%= config.bin %> secret set API_KEY < key.txt',
    '<%= config.bin %> secret set API_KEY   # prompts, without echo',
  ];
  static override args = {
    name: Args.string({
      required: true,
      description: 'The secret name: an environment variable name ([A-Z_][A-Z0-9_]*).',
    }),
  };

  async run(): Promise<SecretSetResult> {
    const { args } = await this.parseWith(SecretSet);
    if (!/^[A-Z_][A-Z0-9_]*$/.test(args.name))
      this.error(`invalid secret name "${args.name}": want an environment variable name ([A-Z_][A-Z0-9_]*)`, {
        exit: 2,
      });
    const value = await readSecretValue(`value for ${args.name}: `);
    if (value === '') this.error('empty value: nothing stored', { exit: 2 });
    const r = await this.client.secret.set({ name: args.name, value });
    this.say(`${r.name}: secret ${r.created ? 'stored' : 'replaced'}`);
    return r;
  }
}
