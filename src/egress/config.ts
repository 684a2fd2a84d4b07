// The daemon config's [egress] table: the egress proxy's settings.
//   ca_bundles = ["/etc/ssl/private-ca.pem", …]  extra CAs (PEM files) trusted for upstreams
//                                                whose TLS the proxy terminates (secrets)
//   proxy_port = 3128                            the bridged listener's port on the gateway
import { readFileSync } from 'node:fs';

export interface EgressConfig {
  ca_bundles: string[];
  proxy_port: number;
}

export const DEFAULT_EGRESS_CONFIG: EgressConfig = { ca_bundles: [], proxy_port: 3128 };

export function parseEgressConfig(v: unknown, source: string): EgressConfig {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new Error(`${source}: egress must be a table`);
  const t = v as Record<string, unknown>;
  const out: EgressConfig = { ...DEFAULT_EGRESS_CONFIG, ca_bundles: [] };
  for (const k of Object.keys(t)) {
    if (k === 'ca_bundles') {
      const b = t[k];
      if (!Array.isArray(b) || !b.every((p): p is string => typeof p === 'string' && p.startsWith('/')))
        throw new Error(`${source}: egress.ca_bundles must be a list of absolute paths`);
      out.ca_bundles = b;
    } else if (k === 'proxy_port') {
      const p = t[k];
      if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535)
        throw new Error(`${source}: egress.proxy_port must be a port number (1-65535)`);
      out.proxy_port = p;
    } else throw new Error(`${source}: unknown key "egress.${k}"`);
  }
  return out;
}

/** The PEM certificates of the configured bundles; a file that cannot be read is an error. */
export function loadCaBundles(paths: readonly string[]): string[] {
  return paths.map((p) => {
    let text: string;
    try {
      text = readFileSync(p, 'utf8');
    } catch (err) {
      throw new Error(`[egress] ca_bundles: cannot read ${p}: ${(err as Error).message}`, { cause: err });
    }
    if (!text.includes('-----BEGIN CERTIFICATE-----'))
      throw new Error(`[egress] ca_bundles: ${p} holds no PEM certificate`);
    return text;
  });
}
