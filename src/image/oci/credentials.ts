// Registry credentials from the user's docker configuration, so an existing `docker login` works:
// `auths[host].auth` (base64 user:password), `auths[host].identitytoken` (an OAuth2 refresh
// token), and credential helpers (`credHelpers[host]`, `credsStore`: `docker-credential-NAME get`).
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DOCKER_HUB } from './reference.ts';

export interface Credentials {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (docker's identitytoken): exchanged at the token endpoint. */
  identityToken?: string;
}

/** Gives the credentials for a registry (as written in references: docker.io, host:port). */
export type CredentialLookup = (registry: string) => Promise<Credentials | undefined>;

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
}

/** A config key (https://index.docker.io/v1/, host:port, https://host/v2/) → registry name. */
export function normalizeConfigKey(key: string): string {
  const host = key
    .replace(/^[a-z]+:\/\//i, '')
    .replace(/\/.*$/, '')
    .toLowerCase();
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? DOCKER_HUB : host;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseDockerConfig(text: string): DockerConfig {
  const v: unknown = JSON.parse(text);
  if (!isRecord(v)) throw new Error('not a JSON object');
  return v as DockerConfig;
}

/** Credentials for `registry` in a parsed config's auths (helpers aside). */
export function credentialsFromAuths(cfg: DockerConfig, registry: string): Credentials | undefined {
  for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
    if (normalizeConfigKey(key) !== registry || !isRecord(entry)) continue;
    const out: Credentials = {};
    if (typeof entry.auth === 'string' && entry.auth !== '') {
      const plain = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = plain.indexOf(':');
      if (colon > 0) {
        out.username = plain.slice(0, colon);
        out.password = plain.slice(colon + 1);
      }
    }
    if (typeof entry.username === 'string' && out.username === undefined) out.username = entry.username;
    if (typeof entry.password === 'string' && out.password === undefined) out.password = entry.password;
    if (typeof entry.identitytoken === 'string' && entry.identitytoken !== '') {
      out.identityToken = entry.identitytoken;
    }
    if (out.username !== undefined || out.identityToken !== undefined) return out;
  }
  return undefined;
}

function helperGet(helper: string, registry: string): Promise<Credentials | undefined> {
  if (!/^[\w.-]+$/.test(helper)) return Promise.resolve(undefined);
  const server = registry === DOCKER_HUB ? 'https://index.docker.io/v1/' : registry;
  return new Promise((resolve) => {
    const child = execFile(`docker-credential-${helper}`, ['get'], { timeout: 10_000 }, (err, stdout) => {
      if (err) {
        resolve(undefined);
        return;
      }
      try {
        const v: unknown = JSON.parse(stdout);
        if (!isRecord(v) || typeof v.Secret !== 'string') {
          resolve(undefined);
          return;
        }
        const user = typeof v.Username === 'string' ? v.Username : '';
        resolve(user === '<token>' ? { identityToken: v.Secret } : { username: user, password: v.Secret });
      } catch {
        resolve(undefined);
      }
    });
    child.stdin?.end(server);
  });
}

/** A lookup over a docker config file (read on every call: a new `docker login` counts). */
export function dockerConfigCredentials(path = dockerConfigPath()): CredentialLookup {
  return async (registry) => {
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    let cfg: DockerConfig;
    try {
      cfg = parseDockerConfig(text);
    } catch (e) {
      throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
    }
    const helper =
      Object.entries(cfg.credHelpers ?? {}).find(([k]) => normalizeConfigKey(k) === registry)?.[1] ??
      cfg.credsStore;
    const direct = credentialsFromAuths(cfg, registry);
    if (direct) return direct;
    return helper !== undefined ? helperGet(helper, registry) : undefined;
  };
}
