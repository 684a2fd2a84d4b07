// An in-process registry (distribution API v2 subset) on 127.0.0.1 for the pull tests: manifests
// by tag or digest, blobs with Range, optional bearer-token auth with a tiny token endpoint (or
// basic auth), and fault injection per blob or manifest (status codes, truncation, corruption,
// extra bytes, stalls, ignoring Range), plus a log of every request.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Fault =
  | { kind: 'status'; status: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'corrupt' }
  | { kind: 'extra' }
  | { kind: 'stall'; after: number }
  | { kind: 'norange' }
  /** 307 to http://localhost:PORT/cdn/<digest> (another host name: credentials must not follow). */
  | { kind: 'redirect' };

export interface LoggedRequest {
  method: string;
  path: string;
  range?: string;
  auth?: string;
  accept?: string;
}

export interface AuthConfig {
  kind: 'bearer' | 'basic';
  /** Credentials the token endpoint (bearer) or the registry (basic) accepts; none = anonymous tokens. */
  user?: string;
  pass?: string;
  /** Bearer only: a refresh token (docker's identitytoken) the token endpoint accepts by POST. */
  refreshToken?: string;
}

function digestOf(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export class FakeRegistry {
  private server: http.Server | undefined;
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, { body: Buffer; mediaType: string }>();
  /** Faults by digest or "repo:tag", consumed one per request. */
  readonly faults = new Map<string, Fault[]>();
  readonly log: LoggedRequest[] = [];
  auth: AuthConfig | undefined;
  private readonly tokens = new Set<string>();
  private readonly sockets = new Set<Socket>();
  host = '';

  async start(listenHost = '127.0.0.1'): Promise<string> {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => {
        res.statusCode = 500;
        res.end(String(e));
      });
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server!.listen(0, listenHost, r));
    this.host = `${listenHost}:${(this.server.address() as AddressInfo).port}`;
    return this.host;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server?.close(() => r()));
  }

  addBlob(b: Buffer): string {
    const d = digestOf(b);
    this.blobs.set(d, b);
    return d;
  }

  /** A manifest under repo at a tag (and its digest); returns the digest. */
  addManifest(repo: string, tag: string | undefined, doc: unknown, mediaType: string): string {
    const body = Buffer.from(JSON.stringify(doc));
    const d = digestOf(body);
    this.manifests.set(`${repo}@${d}`, { body, mediaType });
    if (tag !== undefined) this.manifests.set(`${repo}:${tag}`, { body, mediaType });
    return d;
  }

  /** An OCI image (config + layers) at repo:tag; returns the manifest digest and descriptors. */
  addImage(
    repo: string,
    tag: string | undefined,
    layers: { blob: Buffer; diffId: string; mediaType?: string }[],
    cfg: Record<string, unknown> = {},
    platform = { os: 'linux', architecture: 'amd64' },
  ): { digest: string; config: string; layers: string[]; size: number } {
    const config = Buffer.from(
      JSON.stringify({
        ...platform,
        config: { Env: ['PATH=/usr/bin:/bin'], ...cfg },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      }),
    );
    const configDigest = this.addBlob(config);
    const layerDescs = layers.map((l) => ({
      mediaType: l.mediaType ?? 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: this.addBlob(l.blob),
      size: l.blob.length,
    }));
    const doc = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: layerDescs,
    };
    const digest = this.addManifest(repo, tag, doc, doc.mediaType);
    return {
      digest,
      config: configDigest,
      layers: layerDescs.map((l) => l.digest),
      size: Buffer.byteLength(JSON.stringify(doc)),
    };
  }

  fault(key: string, ...f: Fault[]): void {
    this.faults.set(key, [...(this.faults.get(key) ?? []), ...f]);
  }

  requests(pathPart: string): LoggedRequest[] {
    return this.log.filter((r) => r.path.includes(pathPart));
  }

  private authorized(req: http.IncomingMessage): boolean {
    if (!this.auth) return true;
    const h = req.headers.authorization ?? '';
    if (this.auth.kind === 'basic') {
      return h === `Basic ${Buffer.from(`${this.auth.user}:${this.auth.pass}`).toString('base64')}`;
    }
    return h.startsWith('Bearer ') && this.tokens.has(h.slice(7));
  }

  private challenge(res: http.ServerResponse, scope?: string): void {
    res.statusCode = 401;
    if (this.auth?.kind === 'basic') res.setHeader('WWW-Authenticate', 'Basic realm="fake"');
    else {
      res.setHeader(
        'WWW-Authenticate',
        `Bearer realm="http://${this.host}/token",service="fake-registry"${scope ? `,scope="${scope}"` : ''}`,
      );
    }
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://${this.host}`);
    this.log.push({
      method: req.method ?? '',
      path: url.pathname + url.search,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { auth: req.headers.authorization } : {}),
      ...(req.headers.accept ? { accept: req.headers.accept } : {}),
    });
    if (url.pathname === '/token' && req.method === 'POST') {
      let body = '';
      for await (const c of req) body += String(c);
      const form = new URLSearchParams(body);
      if (
        form.get('grant_type') !== 'refresh_token' ||
        form.get('refresh_token') !== this.auth?.refreshToken
      ) {
        res.statusCode = 401;
        res.end(JSON.stringify({ errors: [{ code: 'DENIED', message: 'bad refresh token' }] }));
        return;
      }
      const t = `tok-${Math.random().toString(36).slice(2)}`;
      this.tokens.add(t);
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ access_token: t, scope: form.get('scope') }));
      return;
    }
    const cdn = /^\/cdn\/(sha256:[0-9a-f]{64})$/.exec(url.pathname);
    if (cdn) {
      const b = this.blobs.get(cdn[1]!);
      res.statusCode = b ? 200 : 404;
      res.end(b);
      return;
    }
    if (url.pathname === '/token') {
      const h = req.headers.authorization;
      if (this.auth?.user !== undefined) {
        const want = `Basic ${Buffer.from(`${this.auth.user}:${this.auth.pass}`).toString('base64')}`;
        if (h !== want) {
          res.statusCode = 401;
          res.end(JSON.stringify({ errors: [{ code: 'DENIED', message: 'bad credentials' }] }));
          return;
        }
      }
      const t = `tok-${Math.random().toString(36).slice(2)}`;
      this.tokens.add(t);
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ token: t, expires_in: 300 }));
      return;
    }
    if (url.pathname === '/v2/' || url.pathname === '/v2') {
      if (!this.authorized(req)) return this.challenge(res);
      res.end('{}');
      return;
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (!m) {
      res.statusCode = 404;
      res.end();
      return;
    }
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    if (!this.authorized(req)) return this.challenge(res, `repository:${repo}:pull`);
    const key =
      kind === 'manifests' ? (ref.startsWith('sha256:') ? `${repo}@${ref}` : `${repo}:${ref}`) : ref;
    const fault = this.faults.get(kind === 'manifests' ? key : ref)?.shift();
    if (fault?.kind === 'status') {
      res.statusCode = fault.status;
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'injected' }] }));
      return;
    }
    if (kind === 'manifests') {
      const man = this.manifests.get(key);
      if (!man) {
        res.statusCode = 404;
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
        return;
      }
      res.setHeader('Content-Type', man.mediaType);
      res.setHeader('Docker-Content-Digest', digestOf(man.body));
      res.end(man.body);
      return;
    }
    let blob = this.blobs.get(ref);
    if (!blob) {
      res.statusCode = 404;
      res.end(JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown' }] }));
      return;
    }
    if (fault?.kind === 'redirect') {
      res.statusCode = 307;
      res.setHeader('Location', `http://localhost:${this.host.split(':')[1]}/cdn/${ref}`);
      res.end();
      return;
    }
    if (fault?.kind === 'corrupt') {
      blob = Buffer.from(blob);
      blob[blob.length - 1] = (blob[blob.length - 1] ?? 0) ^ 0xff;
    }
    if (fault?.kind === 'extra') blob = Buffer.concat([blob, Buffer.from('trailing garbage')]);
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range && fault?.kind !== 'norange') {
      start = Number(range[1]);
      res.statusCode = 206;
      res.setHeader('Content-Range', `bytes ${start}-${blob.length - 1}/${blob.length}`);
    }
    const body = blob.subarray(start);
    res.setHeader('Content-Length', String(body.length));
    res.setHeader('Content-Type', 'application/octet-stream');
    if (fault?.kind === 'truncate') {
      res.flushHeaders();
      res.write(body.subarray(0, Math.max(0, fault.at - start)));
      // Close the connection before Content-Length bytes went out.
      setTimeout(() => req.socket.destroy(), 20);
      return;
    }
    if (fault?.kind === 'stall') {
      res.flushHeaders();
      res.write(body.subarray(0, fault.after));
      return; // never finishes: the client's idle timeout must fire
    }
    res.end(body);
  }
}
