// The egress policy language (issue 16): `all` | `none` | `allow=RULE[,RULE…]`, where a rule is a
// domain, a wildcard domain (`*.example.com`), an IPv4 address or an IPv4 CIDR, each with an
// optional `:PORT`. One parser for the CLI flag, the RPC param and `[vm_defaults] egress`; the
// daemon stores the parsed form and every enforcer (user-mode proxy, bridged nftables) asks
// ruleFor. Parsing is strict on purpose: a rule that does not mean exactly one thing is refused,
// never guessed at, because a guessed rule is either a hole or a mysterious denial.

/** A policy: everything, nothing, or what one of the rules allows. */
export interface EgressPolicy {
  mode: 'all' | 'none' | 'allow';
  rules: EgressRule[];
}

export interface EgressRule {
  kind: 'domain' | 'wildcard' | 'ip' | 'cidr';
  /**
   * Canonical value: a lower-case domain without a trailing dot; for a wildcard the domain
   * under `*.`; a dotted-quad IPv4; a CIDR with its host bits cleared (`10.0.0.0/8`).
   */
  value: string;
  /** Only this destination port; any port when absent. */
  port?: number;
  /** The rule as formatEgress writes it (canonical), e.g. `*.github.com:443`. */
  text: string;
}

/** A rule text the parser refuses; the message is for the user as it is. */
export class EgressRuleError extends Error {
  override name = 'EgressRuleError';
}

/** More rules than this is a policy nobody can review; nftables sets stay small too. */
export const MAX_EGRESS_RULES = 128;
/** Longest policy text accepted (128 rules of long names fit). */
export const MAX_EGRESS_TEXT = 16_384;
/** The policy of a VM created without one and without a configured default. */
export const DEFAULT_EGRESS: EgressPolicy = { mode: 'all', rules: [] };

/** The syntax in one line, for error messages and help texts. */
export const EGRESS_SYNTAX =
  'all | none | allow=RULE[,RULE…] where RULE is a domain (registry.npmjs.org), a wildcard (*.githubusercontent.com), an IPv4 address (10.1.2.3) or a CIDR (10.0.0.0/8), each optionally with :PORT';

/** What `all` answers in ruleFor: every destination is allowed, by this pseudo-rule. */
export const ALL_RULE: EgressRule = Object.freeze({ kind: 'cidr', value: '0.0.0.0/0', text: 'all' });

const LABEL_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const DECIMAL_RE = /^(?:0|[1-9][0-9]*)$/;

function fail(msg: string): never {
  throw new EgressRuleError(msg);
}

/** Parse a policy text; throws EgressRuleError saying what is wrong and how to write it. */
export function parseEgress(text: string): EgressPolicy {
  if (typeof text !== 'string') fail(`egress policy must be a string (${EGRESS_SYNTAX})`);
  if (text.length === 0) fail(`egress policy is empty; use ${EGRESS_SYNTAX}`);
  if (text.length > MAX_EGRESS_TEXT) fail(`egress policy is longer than ${MAX_EGRESS_TEXT} characters`);
  if (/\s/.test(text)) fail(`egress policy must not contain spaces: separate rules with commas only`);
  if (/[^\x21-\x7e]/.test(text))
    fail(`egress policy must be ASCII: write international domain names in their xn-- (punycode) form`);
  if (text === 'all') return { mode: 'all', rules: [] };
  if (text === 'none') return { mode: 'none', rules: [] };
  if (!text.startsWith('allow=')) {
    const lower = text.toLowerCase();
    if (lower === 'all' || lower === 'none' || lower.startsWith('allow='))
      fail(`egress policy keywords are lower case: ${EGRESS_SYNTAX}`);
    fail(`egress policy "${text}" is not one of: ${EGRESS_SYNTAX}`);
  }
  const body = text.slice('allow='.length);
  if (body.length === 0) fail('allow= needs at least one rule (to allow nothing, use none)');
  const parts = body.split(',');
  if (parts.length > MAX_EGRESS_RULES)
    fail(`egress policy has ${parts.length} rules; at most ${MAX_EGRESS_RULES} are allowed`);
  const rules: EgressRule[] = [];
  const seen = new Set<string>();
  for (const part of parts) {
    if (part.length === 0) fail('egress policy has an empty rule (two commas in a row, or a trailing comma)');
    const rule = parseRule(part);
    if (seen.has(rule.text)) fail(`egress rule "${rule.text}" is given twice`);
    seen.add(rule.text);
    rules.push(rule);
  }
  return { mode: 'allow', rules };
}

/** One rule: `DEST` or `DEST:PORT`. */
export function parseRule(part: string): EgressRule {
  if (part.startsWith('[') || (part.match(/:/g)?.length ?? 0) > 1)
    fail(`egress rule "${part}": IPv6 is not supported (guests have IPv4 only)`);
  const colon = part.lastIndexOf(':');
  const dest = colon < 0 ? part : part.slice(0, colon);
  let port: number | undefined;
  if (colon >= 0) {
    const p = part.slice(colon + 1);
    if (!DECIMAL_RE.test(p)) fail(`egress rule "${part}": the port must be a number from 1 to 65535`);
    port = Number(p);
    if (port < 1 || port > 65535) fail(`egress rule "${part}": port ${p} is out of range (1 to 65535)`);
  }
  if (dest.length === 0) fail(`egress rule "${part}" has no destination before the port`);
  const base = parseDest(dest, part);
  const text =
    (base.kind === 'wildcard' ? `*.${base.value}` : base.value) + (port !== undefined ? `:${port}` : '');
  return port !== undefined ? { ...base, port, text } : { ...base, text };
}

function parseDest(dest: string, part: string): Pick<EgressRule, 'kind' | 'value'> {
  if (dest.includes('/')) return { kind: 'cidr', value: parseCidr(dest, part) };
  if (/^[0-9.]+$/.test(dest)) {
    const ip = parseIpv4(dest);
    if (ip === undefined)
      fail(`egress rule "${part}": "${dest}" is not an IPv4 address (four numbers 0-255)`);
    return { kind: 'ip', value: formatIpv4(ip) };
  }
  if (dest.startsWith('*.')) return { kind: 'wildcard', value: parseDomain(dest.slice(2), part) };
  if (dest.includes('*'))
    fail(`egress rule "${part}": a wildcard is only allowed as a whole leading label, as in *.example.com`);
  return { kind: 'domain', value: parseDomain(dest, part) };
}

/** A host name per RFC 1123: lower-cased, one trailing dot dropped. */
function parseDomain(name: string, part: string): string {
  let d = name.toLowerCase();
  if (d.endsWith('.')) d = d.slice(0, -1);
  if (d.length === 0) fail(`egress rule "${part}" has an empty domain`);
  if (d.length > 253) fail(`egress rule "${part}": a domain name has at most 253 characters`);
  const labels = d.split('.');
  for (const l of labels) {
    if (l.length === 0) fail(`egress rule "${part}": the domain has an empty label (two dots in a row)`);
    if (l.length > 63) fail(`egress rule "${part}": domain label "${l.slice(0, 20)}…" is longer than 63`);
    if (!LABEL_RE.test(l))
      fail(`egress rule "${part}": domain label "${l}" may hold only letters, digits and inner hyphens`);
  }
  // An all-numeric last label would make `1.2.3.999` a "domain": names end in a letter label.
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? ''))
    fail(`egress rule "${part}": "${d}" is neither an IPv4 address nor a domain name`);
  return d;
}

function parseCidr(cidr: string, part: string): string {
  const [addr = '', len = '', extra] = cidr.split('/');
  if (extra !== undefined) fail(`egress rule "${part}" has more than one /`);
  const ip = parseIpv4(addr);
  if (ip === undefined) fail(`egress rule "${part}": "${addr}" is not an IPv4 address`);
  if (!DECIMAL_RE.test(len) || Number(len) > 32)
    fail(`egress rule "${part}": the prefix length must be a number from 0 to 32`);
  const bits = Number(len);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return `${formatIpv4((ip & mask) >>> 0)}/${bits}`;
}

/** A dotted quad of decimals 0-255 without leading zeros (010 would read as octal elsewhere). */
export function parseIpv4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!DECIMAL_RE.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** The canonical text of a policy; parseEgress(formatEgress(p)) gives p back. */
export function formatEgress(p: EgressPolicy): string {
  if (p.mode !== 'allow') return p.mode;
  return `allow=${p.rules.map((r) => r.text).join(',')}`;
}

/** Whether anything is held back (the guest then needs the proxy or a filter). */
export function isRestricted(p: EgressPolicy): boolean {
  return p.mode !== 'all';
}

function inCidr(ip: number, cidr: string): boolean {
  const [addr = '', len = '0'] = cidr.split('/');
  const base = parseIpv4(addr);
  if (base === undefined) return false;
  const bits = Number(len);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return (ip & mask) >>> 0 === base;
}

/**
 * The rule that allows a connection, or undefined when the policy denies it. `host` is the name
 * the guest asked for (proxy: the CONNECT/URI host; bridged: the name it resolved), `ip` the
 * address it connects to. Domain rules match `host` only (exactly; a wildcard matches names
 * below its domain at any depth, not the domain itself); IP and CIDR rules match `ip`, or a
 * `host` that is an IPv4 literal. `all` answers ALL_RULE; `none` nothing.
 */
export function ruleFor(
  p: EgressPolicy,
  dest: { host?: string; ip?: string; port: number },
): EgressRule | undefined {
  if (p.mode === 'all') return ALL_RULE;
  if (p.mode === 'none') return undefined;
  let host = dest.host?.toLowerCase();
  if (host?.endsWith('.')) host = host.slice(0, -1);
  const hostIp = host !== undefined ? parseIpv4(host) : undefined;
  const ip = dest.ip !== undefined ? parseIpv4(dest.ip) : hostIp;
  for (const r of p.rules) {
    if (r.port !== undefined && r.port !== dest.port) continue;
    switch (r.kind) {
      case 'domain':
        if (host !== undefined && hostIp === undefined && host === r.value) return r;
        break;
      case 'wildcard':
        if (host !== undefined && hostIp === undefined && host.endsWith(`.${r.value}`)) return r;
        break;
      case 'ip':
        if (ip !== undefined && formatIpv4(ip) === r.value) return r;
        break;
      case 'cidr':
        if (ip !== undefined && inCidr(ip, r.value)) return r;
        break;
    }
  }
  return undefined;
}
