// A registry API v2 client (distribution spec) on node:http/https: manifests with the Accept
// headers for OCI and Docker schema 2 (index/list included), blobs with Range, and the auth
// dance: anonymous first; on 401, `Bearer realm=…,service=…,scope=…` → a token from the realm
// (with basic credentials or an identity token when we have them), or `Basic` with credentials.
// Plain HTTP only for loopback registries or with `insecure`. Transient failures are retried with
// backoff, then reported naming the registry, the request and the status.
import { createHash } from 'node:crypto';
import type { Credentials, CredentialLookup } from './credentials.ts';
import {
  httpRequest,
  isLoopbackHost,
  isTransient,
  isTransientStatus,
  readBody,
  TransientError,
  withRetry,
  type HttpRequest,
  type HttpResponse,
  type RetryPolicy,
} from './http.ts';
import { MANIFEST_ACCEPT, parseManifestDoc, type ImageIndexDoc, type ImageManifestDoc } from './manifest.ts';
import { registryApiHost } from './reference.ts';

export interface RegistryOptions {
  /** Registry as in a reference (docker.io, host:port). */
  registry: string;
  /** Allow plain HTTP and any TLS certificate for a non-loopback registry. */
  insecure?: boolean;
  credentials?: Credentials | CredentialLookup;
  idleTimeoutMs?: number;
  retry?: RetryPolicy;
  userAgent?: string;
  onRetry?: (what: string, attempt: number, error: unknown, delayMs: number) => void;
}

export interface FetchedManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
  doc: ImageManifestDoc | ImageIndexDoc;
}

export interface BlobStream {
  /** Offset the body starts at: the asked offset on a 206, 0 when the registry ignored Range. */
  start: number;
  /** Total blob size when the registry said. */
  total?: number;
  response: HttpResponse;
}

export class RegistryError extends Error {
  readonly status: number | undefined;
  constructor(message: string, status?: number) {
    super(message);
    this.name = 'RegistryError';
    this.status = status;
  }
}

const MAX_MANIFEST = 4 * 1024 * 1024;
const TLS_HINT = 'a registry without valid https on a non-loopback address needs the insecure option';

/** A TLS handshake or certificate failure (an http-only registry answers TLS with garbage). */
function looksLikeTls(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  return (
    code === 'EPROTO' ||
    code.startsWith('ERR_SSL') ||
    code.startsWith('ERR_TLS') ||
    /CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code)
  );
}

/** Parse `Bearer realm="…",service="…"` (auth-params, quoted or token values). */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^\s*(\S+)\s*(.*)$/.exec(header);
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?\s*/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m?.[2] ?? '')) !== null) {
    const key = p[1]?.toLowerCase();
    if (key) params[key] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
  }
  return { scheme: (m?.[1] ?? '').toLowerCase(), params };
}

function registryErrorText(body: Buffer): string {
  try {
    const v = JSON.parse(body.toString('utf8')) as { errors?: { code?: string; message?: string }[] };
    const e = v.errors?.[0];
    if (e) return [e.code, e.message].filter(Boolean).join(': ');
  } catch {
    // not JSON
  }
  return body.toString('utf8').slice(0, 200).trim();
}

export class RegistryClient {
  readonly registry: string;
  private readonly host: string;
  private readonly opts: RegistryOptions;
  private base: Promise<URL> | undefined;
  /** Authorization header per scope (or '' for the basic one). */
  private readonly auth = new Map<string, string>();
  private creds: Promise<Credentials | undefined> | undefined;

  constructor(opts: RegistryOptions) {
    this.opts = opts;
    this.registry = opts.registry;
    this.host = registryApiHost(opts.registry);
  }

  private credentials(): Promise<Credentials | undefined> {
    const c = this.opts.credentials;
    this.creds ??= typeof c === 'function' ? c(this.registry) : Promise.resolve(c);
    return this.creds;
  }

  private plainHttpAllowed(host: string): boolean {
    return this.opts.insecure === true || isLoopbackHost(host);
  }

  /** https://host, or http://host for a loopback/insecure registry that does not speak TLS. */
  private baseUrl(signal?: AbortSignal): Promise<URL> {
    this.base ??= (async () => {
      const https = new URL(`https://${this.host}/`);
      if (!this.plainHttpAllowed(this.host)) return https;
      try {
        const r = await httpRequest(new URL('/v2/', https), {
          signal,
          insecureTls: this.opts.insecure,
          idleTimeoutMs: Math.min(this.opts.idleTimeoutMs ?? 5000, 5000),
        });
        r.body.resume();
        return https;
      } catch {
        return new URL(`http://${this.host}/`);
      }
    })();
    this.base.catch(() => (this.base = undefined));
    return this.base;
  }

  private request(url: URL, req: HttpRequest): Promise<HttpResponse> {
    return httpRequest(url, {
      idleTimeoutMs: this.opts.idleTimeoutMs,
      insecureTls: this.opts.insecure,
      ...req,
      headers: { 'User-Agent': this.opts.userAgent ?? 'banger', ...req.headers },
    });
  }

  /** GET path with auth; on 401 authenticate once and ask again. */
  private async authed(path: string, scope: string, req: HttpRequest): Promise<HttpResponse> {
    const url = new URL(path, await this.baseUrl(req.signal));
    const send = (): Promise<HttpResponse> => {
      const a = this.auth.get(scope);
      return this.request(url, { ...req, headers: { ...req.headers, ...(a ? { Authorization: a } : {}) } });
    };
    let res = await send();
    if (res.status !== 401) return res;
    const challenge = res.headers['www-authenticate'];
    const body = await readBody(res, 64 * 1024).catch(() => Buffer.alloc(0));
    if (typeof challenge !== 'string') {
      throw new RegistryError(
        `registry ${this.registry}: ${path}: HTTP 401 without a WWW-Authenticate challenge`,
        401,
      );
    }
    await this.authenticate(challenge, scope, req.signal);
    res = await send();
    if (res.status === 401 || res.status === 403) {
      const why = registryErrorText(await readBody(res, 64 * 1024).catch(() => body));
      const c = await this.credentials();
      throw new RegistryError(
        `registry ${this.registry}: access to ${scope} denied (HTTP ${res.status}${why ? `: ${why}` : ''}); ` +
          (c
            ? 'the credentials from the docker config were refused'
            : 'no credentials for it (docker login?)'),
        res.status,
      );
    }
    return res;
  }

  private async authenticate(header: string, scope: string, signal?: AbortSignal): Promise<void> {
    const { scheme, params } = parseChallenge(header);
    const creds = await this.credentials();
    if (scheme === 'basic') {
      if (creds?.username === undefined || creds.password === undefined) {
        throw new RegistryError(
          `registry ${this.registry} requires a login (Basic) and there are no credentials for it (docker login ${this.registry})`,
          401,
        );
      }
      this.auth.set(scope, `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`);
      return;
    }
    if (scheme !== 'bearer' || !params.realm) {
      throw new RegistryError(
        `registry ${this.registry}: unsupported authentication challenge ${JSON.stringify(header)}`,
        401,
      );
    }
    const realm = new URL(params.realm);
    if (realm.protocol !== 'https:' && !(realm.protocol === 'http:' && this.plainHttpAllowed(realm.host))) {
      throw new RegistryError(`registry ${this.registry}: token endpoint ${realm.href} is not https`, 401);
    }
    const wantScope = params.scope ?? scope;
    const token = await withRetry(this.opts.retry ?? {}, signal, async () => {
      let res: HttpResponse;
      if (creds?.identityToken !== undefined) {
        const form = new URLSearchParams({
          grant_type: 'refresh_token',
          refresh_token: creds.identityToken,
          client_id: 'banger',
          scope: wantScope,
          ...(params.service ? { service: params.service } : {}),
        });
        res = await this.request(realm, {
          method: 'POST',
          signal,
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          body: form.toString(),
        });
      } else {
        const u = new URL(realm);
        if (params.service) u.searchParams.set('service', params.service);
        u.searchParams.set('scope', wantScope);
        const basic: Record<string, string> = {};
        if (creds?.username !== undefined && creds.password !== undefined) {
          basic.Authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
        }
        res = await this.request(u, { signal, headers: basic });
      }
      const body = await readBody(res, 1024 * 1024);
      if (isTransientStatus(res.status)) {
        throw new TransientError(
          `registry ${this.registry}: token endpoint ${realm.host}: HTTP ${res.status}`,
        );
      }
      if (res.status !== 200) {
        throw new RegistryError(
          `registry ${this.registry}: token endpoint ${realm.host} refused (HTTP ${res.status}: ${registryErrorText(body)})` +
            (creds ? '' : '; no credentials for it (docker login?)'),
          res.status,
        );
      }
      const v = JSON.parse(body.toString('utf8')) as { token?: unknown; access_token?: unknown };
      const t =
        typeof v.token === 'string' ? v.token : typeof v.access_token === 'string' ? v.access_token : '';
      if (t === '') throw new RegistryError(`registry ${this.registry}: token endpoint gave no token`);
      return t;
    });
    this.auth.set(scope, `Bearer ${token}`);
  }

  /** A request with retries on transient failures; non-2xx answers become clear errors. */
  private async getOk(
    path: string,
    scope: string,
    what: string,
    req: HttpRequest,
    ok: (status: number) => boolean,
  ): Promise<HttpResponse> {
    return withRetry(
      this.opts.retry ?? {},
      req.signal,
      async () => {
        let res: HttpResponse;
        try {
          res = await this.authed(path, scope, req);
        } catch (e) {
          if (e instanceof RegistryError || req.signal?.aborted) throw e;
          const msg = `registry ${this.registry}: ${what}: ${(e as Error).message.replace(/\s*\n\s*/g, ' ').trim()}`;
          if (isTransient(e)) throw new TransientError(msg);
          throw new RegistryError(looksLikeTls(e) ? `${msg} (TLS failed; ${TLS_HINT})` : msg);
        }
        if (ok(res.status)) return res;
        const body = await readBody(res, 64 * 1024).catch(() => Buffer.alloc(0));
        const msg = `registry ${this.registry}: ${what}: HTTP ${res.status} ${res.statusText}${
          body.length ? ` (${registryErrorText(body)})` : ''
        }`;
        if (isTransientStatus(res.status)) throw new TransientError(msg);
        throw new RegistryError(msg, res.status);
      },
      (attempt, e, delay) => this.opts.onRetry?.(what, attempt, e, delay),
    );
  }

  async getManifest(repository: string, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const what = `manifest ${repository}:${reference}`;
    const res = await this.getOk(
      `/v2/${repository}/manifests/${reference}`,
      `repository:${repository}:pull`,
      what,
      { signal, headers: { Accept: MANIFEST_ACCEPT } },
      (s) => s === 200,
    );
    const body = await readBody(res, MAX_MANIFEST);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (reference.startsWith('sha256:') && reference !== digest) {
      throw new RegistryError(`registry ${this.registry}: ${what}: content has digest ${digest}`);
    }
    const header = res.headers['docker-content-digest'];
    if (typeof header === 'string' && header.startsWith('sha256:') && header !== digest) {
      throw new RegistryError(
        `registry ${this.registry}: ${what}: Docker-Content-Digest ${header} but content is ${digest}`,
      );
    }
    const contentType = res.headers['content-type'];
    const doc = parseManifestDoc(body, contentType);
    return { digest, mediaType: doc.mediaType, body, doc };
  }

  /** A small blob (the config) in memory, digest and size checked. */
  async getBlob(repository: string, digest: string, size: number, signal?: AbortSignal): Promise<Buffer> {
    const res = await this.openBlob(repository, digest, 0, signal);
    const body = await readBody(res.response, size);
    const got = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (got !== digest)
      throw new RegistryError(`registry ${this.registry}: blob ${digest} has digest ${got}`);
    return body;
  }

  /** GET a blob from `offset` (Range when > 0). The caller consumes response.body. */
  async openBlob(
    repository: string,
    digest: string,
    offset: number,
    signal?: AbortSignal,
  ): Promise<BlobStream> {
    const res = await this.getOk(
      `/v2/${repository}/blobs/${digest}`,
      `repository:${repository}:pull`,
      `blob ${digest.slice(0, 19)}`,
      { signal, headers: offset > 0 ? { Range: `bytes=${offset}-` } : {} },
      (s) => s === 200 || (s === 206 && offset > 0),
    );
    if (res.status === 206) {
      const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
      if (!m || Number(m[1]) !== offset) {
        res.body.destroy();
        throw new RegistryError(
          `registry ${this.registry}: blob ${digest}: bad Content-Range for offset ${offset}`,
        );
      }
      return { start: offset, total: m[2] === '*' ? undefined : Number(m[2]), response: res };
    }
    const len = Number(res.headers['content-length']);
    return { start: 0, total: Number.isFinite(len) ? len : undefined, response: res };
  }
}
