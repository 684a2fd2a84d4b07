// The ssh_config block that makes plain `ssh <name>.vm` reach banger's VMs, and its managed
// insertion into / removal from an ssh config file. Pure text functions: table-tested.

import { SSH_KEX_ALGORITHMS } from '../vm/ssh.ts';

export const BEGIN = '# >>> banger ssh-config (managed: banger ssh-config --install / --uninstall) >>>';
export const END = '# <<< banger ssh-config <<<';

export function sshConfigBlock(o: { identityFile: string; knownHostsFile: string }): string {
  return [
    BEGIN,
    '# <name>.vm resolves through banger’s DNS (bridge mode); host keys are the ones banger pinned.',
    'Host *.vm',
    '    User root',
    `    IdentityFile "${o.identityFile}"`,
    '    IdentitiesOnly yes',
    `    UserKnownHostsFile "${o.knownHostsFile}"`,
    '    GlobalKnownHostsFile /dev/null',
    '    StrictHostKeyChecking yes',
    '    PasswordAuthentication no',
    // X25519 first: the post-quantum hybrid costs an emulated guest ~0.2 s per login.
    `    KexAlgorithms ${SSH_KEX_ALGORITHMS}`,
    END,
    '',
  ].join('\n');
}

/** The file's text without banger's block (and without the blank line that followed it). */
export function removeBlock(text: string): string {
  const start = text.indexOf(BEGIN);
  if (start === -1) return text;
  const endAt = text.indexOf(END, start);
  if (endAt === -1) return text; // a damaged block: leave the file alone
  let after = endAt + END.length;
  if (text[after] === '\n') after++;
  if (text[after] === '\n') after++;
  return text.slice(0, start) + text.slice(after);
}

/**
 * banger's block at the top of the file (ssh uses the first value it finds, so it must come
 * before any catch-all `Host *`), replacing an older copy of it.
 */
export function installBlock(text: string, block: string): string {
  const rest = removeBlock(text);
  return rest.length > 0 ? `${block}\n${rest}` : block;
}
