import type { SecretListResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatRelativeTime } from '../../format.ts';
import { renderRows } from '../../table.ts';

type SecretEntry = SecretListResult['secrets'][number];

export default class SecretList extends BangerCommand {
  static override summary = 'List secrets (names only) and the VMs that use them.';
  static override description = `Names, when each was last set, and the VMs created with it. Values are never shown. --json prints the records as an array.`;
  static override examples = ['<%= config.bin %> secret list', '<%= config.bin %> secret list --json'];

  async run(): Promise<SecretEntry[]> {
    await this.parseWith(SecretList);
    const { secrets } = await this.client.secret.list();
    if (secrets.length === 0) {
      this.say(`no secrets yet; store one with: ${this.config.bin} secret set NAME`);
      return secrets;
    }
    const now = Date.now();
    const lines = renderRows<SecretEntry>(
      [
        { header: 'NAME', get: (s) => s.name },
        { header: 'UPDATED', get: (s) => formatRelativeTime(s.updated_at, now) },
        { header: 'VMS', get: (s) => (s.used_by.length > 0 ? s.used_by.join(',') : '-') },
      ],
      secrets,
    );
    for (const l of lines) this.say(l);
    return secrets;
  }
}
