// The guest's side of the egress proxy, set up once the VM answers (create, warm clone; a fork
// inherits its source's files): the proxy variables and each secret's placeholder in every
// login and exec environment, and banger's CA in the trust store when TLS is terminated.
// Environments: /etc/environment (pam_env: ssh sessions, console logins), sshd's SetEnv
// (`vm exec`/`vm run` commands even without PAM) and /etc/profile.d (login shells).
// Placeholders and URLs are not secret: the values never come here.
import type { QgaClient } from '../engine/qga.ts';

export const GUEST_CA_PATH = '/usr/local/share/ca-certificates/banger-egress.crt';
/** What the guest reaches directly even with a proxy: itself and other VMs by their .vm names. */
export const GUEST_NO_PROXY = 'localhost,127.0.0.1,::1,.vm';

export interface GuestEgressSetup {
  /** The proxy URL as the guest reaches it; undefined when the guest needs no proxy. */
  proxyUrl?: string;
  /** NAME → placeholder. */
  placeholders: Record<string, string>;
  /** banger's CA (PEM) to trust; present when the proxy terminates this VM's TLS. */
  caPem?: string;
}

// Everything written into shell, PAM and sshd syntax is checked to need no quoting anywhere.
const NAME_RE = /^(?:[A-Z_][A-Z0-9_]*|https?_proxy|no_proxy)$/;
const VALUE_RE = /^[A-Za-z0-9._:/,@+-]+$/;

/** The environment the guest gets, in order: proxy variables, then one per secret. Pure. */
export function guestEnv(s: GuestEgressSetup): [string, string][] {
  const env: [string, string][] = [];
  if (s.proxyUrl !== undefined) {
    for (const n of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) env.push([n, s.proxyUrl]);
    env.push(['NO_PROXY', GUEST_NO_PROXY], ['no_proxy', GUEST_NO_PROXY]);
  }
  // Node ignores the system store; most other TLS stacks read it.
  if (s.caPem !== undefined) env.push(['NODE_EXTRA_CA_CERTS', GUEST_CA_PATH]);
  for (const [name, ph] of Object.entries(s.placeholders).sort(([a], [b]) => a.localeCompare(b)))
    env.push([name, ph]);
  for (const [n, v] of env) {
    if (!NAME_RE.test(n) || !VALUE_RE.test(v))
      throw new Error(`egress guest setup: refusing environment entry ${JSON.stringify(n)}`);
  }
  return env;
}

/**
 * The shell script that applies it (run by the guest agent as root; the CA PEM on stdin).
 * Idempotent: banger's block in /etc/environment is replaced, its files rewritten. Pure.
 * `root` (tests) prefixes every path and leaves out what would touch the running system
 * (update-ca-certificates, the sshd reload).
 */
export function guestSetupScript(s: GuestEgressSetup, root = ''): string {
  const env = guestEnv(s);
  const test = root !== '';
  const lines = ['set -eu', 'umask 022', `r='${root.replace(/'/g, '')}'`];
  if (s.caPem !== undefined) {
    lines.push(
      `ca="$r${GUEST_CA_PATH}"`,
      'mkdir -p "${ca%/*}"',
      'cat >"$ca.tmp" && mv "$ca.tmp" "$ca"',
      // The bundle most TLS stacks read gets the CA at once (appended once: the certificate's
      // second line is unique to it); update-ca-certificates, which rehashes every CA (tens of
      // seconds under TCG), runs detached to make it permanent the distribution's way.
      'if [ -f "$r/etc/ssl/certs/ca-certificates.crt" ]; then',
      '  grep -qxF "$(sed -n 2p "$ca")" "$r/etc/ssl/certs/ca-certificates.crt" || cat "$ca" >>"$r/etc/ssl/certs/ca-certificates.crt"',
      'else',
      '  mkdir -p "$r/etc/ssl/certs" && cp "$ca" "$r/etc/ssl/certs/ca-certificates.crt"',
      'fi',
      ...(test
        ? []
        : [
            'if command -v update-ca-certificates >/dev/null 2>&1; then (update-ca-certificates </dev/null >/dev/null 2>&1 &); fi',
          ]),
    );
  }
  const pairs = env.map(([n, v]) => `${n}=${v}`);
  lines.push(
    'mkdir -p "$r/etc/profile.d" "$r/etc/ssh/sshd_config.d"',
    'touch "$r/etc/environment"',
    `sed -i '/^# banger-egress begin$/,/^# banger-egress end$/d' "$r/etc/environment"`,
    `printf '%s\\n' '# banger-egress begin' ${pairs.map((p) => `'${p}'`).join(' ')} '# banger-egress end' >>"$r/etc/environment"`,
    `printf '%s\\n' '# banger egress (src/egress/guest.ts)' ${pairs.map((p) => `'export ${p}'`).join(' ')} >"$r/etc/profile.d/banger-egress.sh"`,
  );
  if (pairs.length > 0)
    lines.push(`printf '%s\\n' 'SetEnv ${pairs.join(' ')}' >"$r/etc/ssh/sshd_config.d/banger-egress.conf"`);
  else lines.push('rm -f "$r/etc/ssh/sshd_config.d/banger-egress.conf"');
  // New sessions get the environment; the running ones (only banger's readiness probe) keep theirs.
  if (!test)
    lines.push(
      // SIGHUP makes sshd re-exec itself with the new config; it is not listening for a moment
      // then, so wait (at most 10 s) until port 22's listening socket is a new one: the next
      // `vm exec` must not meet a closed port.
      "lis() { awk '$2 ~ /:0016$/ && $4 == \"0A\" { print $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort | tr '\\n' ' '; }",
      'old=$(lis)',
      'if [ -s /run/sshd.pid ]; then kill -HUP "$(cat /run/sshd.pid)" || true; else systemctl reload ssh </dev/null >/dev/null 2>&1 || true; fi',
      'i=0; while [ $i -lt 200 ]; do now=$(lis); [ -n "$now" ] && [ "$now" != "$old" ] && break; sleep 0.05; i=$((i + 1)); done',
    );
  lines.push('echo "banger-egress: ok"');
  return lines.join('\n') + '\n';
}

/** Apply the setup through the guest agent; throws with the script's stderr when it fails. */
export async function applyGuestEgress(
  qga: QgaClient,
  s: GuestEgressSetup,
  timeoutMs: number,
): Promise<string> {
  const r = await qga.exec('/bin/sh', ['-c', guestSetupScript(s)], {
    timeoutMs,
    ...(s.caPem !== undefined ? { inputData: Buffer.from(s.caPem) } : {}),
  });
  if (r.exitcode !== 0)
    throw new Error(
      `egress guest setup failed (exit ${r.exitcode ?? 'none'}): ${r.stderr.trim() || r.stdout.trim()}`,
    );
  return `guest egress: ${guestEnv(s)
    .map(([n]) => n)
    .filter((n) => !/^(https?_proxy|no_proxy)$/.test(n))
    .join(', ')}${s.caPem !== undefined ? ', CA trusted' : ''}`;
}

export interface GuestEgressDeps {
  /** banger's CA certificate (src/egress/ca.ts), made on first use. */
  caPem: () => Promise<string>;
  /** The VM's placeholder for a secret (derivePlaceholder with the install key). */
  placeholder: (vmId: string, name: string) => string;
  /** The proxy URL the guest uses: user mode guestfwd's, bridged the gateway's. */
  proxyUrl: (vm: GuestEgressVm) => string;
}

export interface GuestEgressVm {
  id: string;
  networkMode: string;
  egress: { mode: string };
  secrets: { name: string; hosts: string[] }[];
}

/**
 * What a VM's guest needs, or undefined when nothing (policy `all`, no secrets: the guest is
 * left exactly as its image made it). The proxy variables go in whenever the policy restricts
 * or there are secrets; the CA only with secrets (only then is TLS terminated).
 */
export async function guestEgressFor(
  d: GuestEgressDeps,
  vm: GuestEgressVm,
): Promise<GuestEgressSetup | undefined> {
  const restricted = vm.egress.mode !== 'all';
  if (!restricted && vm.secrets.length === 0) return undefined;
  const placeholders: Record<string, string> = {};
  for (const s of vm.secrets) placeholders[s.name] = d.placeholder(vm.id, s.name);
  return {
    proxyUrl: d.proxyUrl(vm),
    placeholders,
    ...(vm.secrets.length > 0 ? { caPem: await d.caPem() } : {}),
  };
}
