// Default locations. A system install (/etc/banger/install.toml present) uses /run and /var;
// a user install uses XDG directories.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const INSTALL_TOML = '/etc/banger/install.toml';
export const DEFAULT_HELPER_SOCKET = '/run/banger-root/bangerd-root.sock';

function uid(): number {
  return process.getuid?.() ?? 0;
}

export function runtimeDir(): string {
  const xdg = process.env.XDG_RUNTIME_DIR;
  if (xdg) return join(xdg, 'banger');
  return uid() === 0 ? '/run/banger' : join('/tmp', `banger-${uid()}`);
}

export function defaultDaemonSocket(): string {
  if (existsSync(INSTALL_TOML)) return '/run/banger/bangerd.sock';
  return join(runtimeDir(), 'bangerd.sock');
}

export function defaultStateDir(): string {
  if (existsSync(INSTALL_TOML)) return '/var/lib/banger';
  return join(process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'banger');
}

export function defaultConfigFile(): string {
  return join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'banger', 'config.toml');
}

/** The socket the CLI talks to: --socket, then BANGER_SOCKET, then the default. */
export function resolveDaemonSocket(flag: string | undefined): string {
  return flag ?? process.env.BANGER_SOCKET ?? defaultDaemonSocket();
}
