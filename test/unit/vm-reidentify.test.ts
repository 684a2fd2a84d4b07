import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EngineError } from '../../src/engine/errors.ts';
import type { QgaExecOptions, QgaExecResult } from '../../src/engine/qga.ts';
import { findGuestDir } from '../../src/image/recipe.ts';
import { generateHostKey, type HostKey } from '../../src/image/seed.ts';
import {
  dateArgs,
  reidentifyGuest,
  reidentifyInput,
  reidentifyScript,
  ReidentifyError,
  type ReidentifyOptions,
} from '../../src/vm/reidentify.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const SCRIPT = join(findGuestDir(), 'bin', 'banger-reidentify');
const SHELLS: [string, string[]][] = [['sh', ['sh']]];
if (existsSync('/bin/busybox')) SHELLS.push(['busybox sh', ['/bin/busybox', 'sh']]);

let key: HostKey;
const tmp = shortTempDir('bg-reid');
beforeAll(async () => {
  key = await generateHostKey('reid-test');
});
afterAll(() => tmp.cleanup());

function opts(over: Partial<ReidentifyOptions> = {}): ReidentifyOptions {
  return {
    machineId: '0123456789abcdef0123456789abcdef',
    hostname: 'dev-2',
    hostKeyPrivate: key.privateKey,
    hostKeyPublic: key.publicKey,
    entropy: Buffer.alloc(64, 7),
    ...over,
  };
}

const NET = { mac: '52:54:00:AB:CD:EF', address: '10.20.0.5/24', gateway: '10.20.0.1' };

function parseInput(text: string): Map<string, string> {
  return new Map(
    text
      .trimEnd()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

describe('reidentifyInput', () => {
  it('writes one key=value line per value, keys and blobs base64', () => {
    const text = reidentifyInput(opts({ net: { ...NET, nameservers: ['10.20.0.1', '2001:db8::1'] } }));
    expect(text.endsWith('\n')).toBe(true);
    const m = parseInput(text);
    expect([...m.keys()]).toEqual([
      'machine_id',
      'hostname',
      'host_key',
      'host_key_pub',
      'entropy',
      'mac',
      'address',
      'gateway',
      'nameservers',
    ]);
    expect(m.get('machine_id')).toBe('0123456789abcdef0123456789abcdef');
    expect(Buffer.from(m.get('host_key')!, 'base64').toString()).toBe(key.privateKey);
    expect(Buffer.from(m.get('host_key_pub')!, 'base64').toString()).toBe(`${key.publicKey}\n`);
    expect(Buffer.from(m.get('entropy')!, 'base64')).toEqual(Buffer.alloc(64, 7));
    expect(m.get('mac')).toBe('52:54:00:ab:cd:ef'); // lowercased for the script
    expect(m.get('nameservers')).toBe('10.20.0.1,2001:db8::1');
  });

  it('makes fresh entropy when none is given, and leaves the network out without net', () => {
    const a = parseInput(reidentifyInput(opts({ entropy: undefined })));
    const b = parseInput(reidentifyInput(opts({ entropy: undefined })));
    expect(Buffer.from(a.get('entropy')!, 'base64')).toHaveLength(64);
    expect(a.get('entropy')).not.toBe(b.get('entropy'));
    expect(a.has('mac')).toBe(false);
  });

  it.each<[string, Partial<ReidentifyOptions>]>([
    ['a newline in the hostname', { hostname: 'dev\nmachine_id=ffffffffffffffffffffffffffffffff' }],
    ['a shell metacharacter in the hostname', { hostname: 'a;reboot' }],
    ['a hostname starting with a dash', { hostname: '-n' }],
    ['an uppercase machine-id', { machineId: '0123456789ABCDEF0123456789ABCDEF' }],
    ['a short machine-id', { machineId: '0123456789abcdef' }],
    ['an all-zero machine-id', { machineId: '0'.repeat(32) }],
    ['an RSA public key', { hostKeyPublic: 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ host' }],
    [
      'two public keys',
      { hostKeyPublic: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB b' },
    ],
    [
      'a public key with a control character',
      { hostKeyPublic: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA a\tb' },
    ],
    [
      'a PEM RSA private key',
      { hostKeyPrivate: '-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n' },
    ],
    [
      'a private key with trailing junk',
      {
        hostKeyPrivate:
          '-----BEGIN OPENSSH PRIVATE KEY-----\nAA\n-----END OPENSSH PRIVATE KEY-----\nrm -rf /',
      },
    ],
    ['too little entropy', { entropy: Buffer.alloc(8) }],
    ['a multicast MAC', { net: { ...NET, mac: '01:00:5e:00:00:01' } }],
    ['a short MAC', { net: { ...NET, mac: '52:54:00:ab:cd' } }],
    ['a /31', { net: { ...NET, address: '10.20.0.5/31' } }],
    ['an octet over 255', { net: { ...NET, address: '10.20.0.256/24' } }],
    ['an address without a prefix', { net: { ...NET, address: '10.20.0.5' } }],
    ['a leading zero', { net: { ...NET, address: '10.20.0.05/24' } }],
    ['a gateway outside the subnet', { net: { ...NET, gateway: '10.21.0.1' } }],
    ['the gateway as the address', { net: { ...NET, gateway: '10.20.0.5' } }],
    ['a gateway with a prefix', { net: { ...NET, gateway: '10.20.0.1/24' } }],
    ['a hostile nameserver', { net: { ...NET, nameservers: ['1.1.1.1\nnameserver 6.6.6.6'] } }],
  ])('rejects %s', (_what, over) => {
    expect(() => reidentifyInput(opts(over))).toThrow();
  });
});

/** A small root for the script: /etc/hosts, old host keys, an sshd config to leave alone. */
function makeRoot(name: string): string {
  const root = join(tmp.dir, name);
  rmSync(root, { recursive: true, force: true });
  mkdirSync(join(root, 'etc', 'ssh'), { recursive: true });
  writeFileSync(
    join(root, 'etc', 'hosts'),
    '127.0.0.1\tlocalhost\n127.0.1.1 template\n::1\tlocalhost ip6-localhost\n',
  );
  writeFileSync(join(root, 'etc', 'machine-id'), 'ffffffffffffffffffffffffffffffff\n');
  writeFileSync(join(root, 'etc', 'hostname'), 'template\n');
  for (const f of [
    'ssh_host_ed25519_key',
    'ssh_host_rsa_key',
    'ssh_host_rsa_key.pub',
    'ssh_host_ecdsa_key-cert.pub',
  ]) {
    writeFileSync(join(root, 'etc', 'ssh', f), 'old\n', { mode: 0o600 });
  }
  writeFileSync(join(root, 'etc', 'ssh', 'sshd_config'), 'Port 22\n');
  return root;
}

/** Every file under dir with its mode and content, to see that nothing changed. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[p] = `${(statSync(p).mode & 0o7777).toString(8)} ${readFileSync(p, 'utf8')}`;
    }
  };
  walk(dir);
  return out;
}

function runScript(
  shell: string[],
  root: string,
  input: string,
): { status: number | null; stdout: string; stderr: string } {
  // The way the host runs it: sh -c "<text>" banger-reidentify, input on stdin.
  const r = spawnSync(
    shell[0]!,
    [...shell.slice(1), '-c', readFileSync(SCRIPT, 'utf8'), 'banger-reidentify'],
    {
      input,
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BANGER_REID_ROOT: root },
    },
  );
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const mode = (p: string): number => statSync(p).mode & 0o7777;

describe.each(SHELLS)('guest/bin/banger-reidentify under %s', (_name, shell) => {
  it('writes the identity files with their modes and prints what it would run', () => {
    const root = makeRoot('ok');
    const r = runScript(shell, root, reidentifyInput(opts({ net: { ...NET, nameservers: ['10.20.0.1'] } })));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const etc = join(root, 'etc');
    expect(readFileSync(join(etc, 'machine-id'), 'utf8')).toBe('0123456789abcdef0123456789abcdef\n');
    expect(mode(join(etc, 'machine-id'))).toBe(0o444);
    expect(readFileSync(join(etc, 'hostname'), 'utf8')).toBe('dev-2\n');
    expect(readFileSync(join(etc, 'hosts'), 'utf8')).toBe(
      '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\tdev-2\n',
    );
    expect(readFileSync(join(etc, 'ssh', 'ssh_host_ed25519_key'), 'utf8')).toBe(key.privateKey);
    expect(mode(join(etc, 'ssh', 'ssh_host_ed25519_key'))).toBe(0o600);
    expect(readFileSync(join(etc, 'ssh', 'ssh_host_ed25519_key.pub'), 'utf8')).toBe(`${key.publicKey}\n`);
    expect(mode(join(etc, 'ssh', 'ssh_host_ed25519_key.pub'))).toBe(0o644);
    expect(readdirSync(join(etc, 'ssh')).sort()).toEqual([
      'ssh_host_ed25519_key',
      'ssh_host_ed25519_key.pub',
      'sshd_config',
    ]);
    expect(readFileSync(join(etc, 'resolv.conf'), 'utf8')).toBe('nameserver 10.20.0.1\n');
    expect(readdirSync(etc).filter((f) => f.includes('banger-new'))).toEqual([]);
    // networkd gets the clone's address too, in a file that sorts before the template's config.
    expect(readFileSync(join(root, 'run', 'systemd', 'network', '00-banger-clone.network'), 'utf8')).toBe(
      [
        "# Written by banger-reidentify: this warm clone's own address.",
        '[Match]',
        'Name=eth0',
        '',
        '[Network]',
        'Address=10.20.0.5/24',
        'Gateway=10.20.0.1',
        'LinkLocalAddressing=no',
        'IPv6AcceptRA=no',
        'DHCP=no',
        'DNS=10.20.0.1',
        '',
      ].join('\n'),
    );

    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toEqual([
      'dry-run: hostname dev-2',
      'dry-run: perl ioctl /dev/urandom RNDADDENTROPY 64 bytes (512 bits), RNDRESEEDCRNG',
      'dry-run: ip link set dev eth0 down',
      'dry-run: ip link set dev eth0 address 52:54:00:ab:cd:ef',
      'dry-run: networkctl reload',
      'dry-run: ip link set dev eth0 up',
      'dry-run: ip addr flush dev eth0',
      'dry-run: ip addr replace 10.20.0.5/24 dev eth0',
      'dry-run: ip route replace default via 10.20.0.1',
      'banger-reidentify: ok machine-id hostname host-key entropy network dns (dry run)',
    ]);
  });

  it('leaves the network alone without the network keys', () => {
    const root = makeRoot('nonet');
    const r = runScript(shell, root, reidentifyInput(opts()));
    expect(r.status).toBe(0);
    expect(r.stdout).not.toContain(' ip ');
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe(
      'banger-reidentify: ok machine-id hostname host-key entropy (dry run)',
    );
    expect(existsSync(join(root, 'etc', 'resolv.conf'))).toBe(false);
  });

  describe('refuses odd input, changing nothing', () => {
    const good = (): string => reidentifyInput(opts({ net: NET }));
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    const cases: [string, () => string, RegExp][] = [
      [
        'a hostname with a space',
        () => good().replace('hostname=dev-2', 'hostname=dev 2'),
        /invalid hostname/,
      ],
      [
        'a hostname with a $( )',
        () => good().replace('hostname=dev-2', 'hostname=$(reboot)'),
        /invalid hostname/,
      ],
      [
        'a label over 63',
        () => good().replace('hostname=dev-2', `hostname=${'a'.repeat(64)}`),
        /invalid hostname/,
      ],
      [
        'a bad machine-id',
        () => good().replace(/machine_id=.*/, 'machine_id=0123456789abcdef0123456789abcdeg'),
        /machine_id/,
      ],
      [
        'an all-zero machine-id',
        () => good().replace(/machine_id=.*/, `machine_id=${'0'.repeat(32)}`),
        /machine_id/,
      ],
      [
        'an RSA public key',
        () => good().replace(/host_key_pub=.*/, `host_key_pub=${b64('ssh-rsa AAAAB3Nza x\n')}`),
        /ssh-ed25519/,
      ],
      [
        'two public key lines',
        () =>
          good().replace(/host_key_pub=.*/, `host_key_pub=${b64(`${key.publicKey}\n${key.publicKey}\n`)}`),
        /more than one line/,
      ],
      [
        'a private key that is not one',
        () => good().replace(/host_key=.*/, `host_key=${b64('#!/bin/sh\nreboot\n')}`),
        /private key/,
      ],
      [
        'a private key with something after it',
        () => good().replace(/host_key=.*/, `host_key=${b64(`${key.privateKey}extra\n`)}`),
        /private key/,
      ],
      ['non-base64 entropy', () => good().replace(/entropy=.*/, 'entropy=$(reboot)'), /entropy/],
      ['too little entropy', () => good().replace(/entropy=.*/, `entropy=${b64('short')}`), /32 to 512/],
      ['an uppercase MAC', () => good().replace(/mac=.*/, 'mac=52:54:00:AB:CD:EF'), /invalid mac/],
      ['a multicast MAC', () => good().replace(/mac=.*/, 'mac=53:54:00:ab:cd:ef'), /invalid mac/],
      ['a /31', () => good().replace(/address=.*/, 'address=10.20.0.5/31'), /invalid address/],
      ['an octet over 255', () => good().replace(/address=.*/, 'address=10.20.0.256/24'), /invalid address/],
      ['a bad gateway', () => good().replace(/gateway=.*/, 'gateway=10.20.0.1;reboot'), /invalid gateway/],
      [
        'a MAC without an address',
        () => reidentifyInput(opts()) + 'mac=52:54:00:ab:cd:ef\n',
        /invalid address/,
      ],
      ['a hostile nameserver list', () => `${good()}nameservers=1.1.1.1 6.6.6.6\n`, /nameservers/],
      ['an unknown key', () => `${good()}PATH=/tmp\n`, /unknown input key/],
      ['a key given twice', () => `${good()}hostname=other\n`, /given twice/],
      ['a line without =', () => `${good()}garbage\n`, /malformed/],
      ['a missing host key', () => good().replace(/host_key=.*\n/, ''), /host_key is missing/],
    ];
    let root: string;
    let before: Record<string, string>;
    beforeEach(() => {
      root = makeRoot('bad');
      before = snapshot(root);
    });
    it.each(cases)('%s', (_what, input, message) => {
      const r = runScript(shell, root, input());
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
      expect(snapshot(root)).toEqual(before);
    });
  });
});

/** A stand-in for QgaClient that runs guest-exec'd commands on the host, under a test root. */
class HostQga {
  readonly calls: string[] = [];
  setTimeError: Error | undefined;
  setTimeNs: bigint | undefined;
  readonly root: string;
  constructor(root: string) {
    this.root = root;
  }
  sync(): Promise<void> {
    this.calls.push('sync');
    return Promise.resolve();
  }
  setTime(ns: bigint): Promise<void> {
    this.calls.push('setTime');
    this.setTimeNs = ns;
    return this.setTimeError ? Promise.reject(this.setTimeError) : Promise.resolve();
  }
  exec(path: string, args: string[], o: QgaExecOptions): Promise<QgaExecResult> {
    this.calls.push(`exec ${path} ${args[0] ?? ''}`);
    if (path === '/bin/date') return Promise.resolve({ exitcode: 0, stdout: '', stderr: '' });
    const r = spawnSync(path, args, {
      input: o.inputData,
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BANGER_REID_ROOT: this.root },
    });
    return Promise.resolve({ exitcode: r.status, stdout: r.stdout, stderr: r.stderr });
  }
}

describe('reidentifyGuest', () => {
  it('syncs, sets the clock to the host time, then runs the script with the input', async () => {
    const root = makeRoot('guest');
    const qga = new HostQga(root);
    const before = BigInt(Date.now()) * 1_000_000n;
    const r = await reidentifyGuest(qga, opts(), { timeoutMs: 5_000 });
    const after = BigInt(Date.now()) * 1_000_000n;
    expect(qga.calls).toEqual(['sync', 'setTime', 'exec /bin/sh -c']);
    expect(qga.setTimeNs! >= before && qga.setTimeNs! <= after).toBe(true);
    expect(r.summary).toBe('banger-reidentify: ok machine-id hostname host-key entropy (dry run)');
    expect(r.clock).toBe('guest-set-time');
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
    expect(readFileSync(join(root, 'etc', 'hostname'), 'utf8')).toBe('dev-2\n');
    expect(reidentifyScript()).toBe(readFileSync(SCRIPT, 'utf8'));
  });

  it('sets the clock with date(1) when the agent refuses guest-set-time', async () => {
    const qga = new HostQga(makeRoot('noclock'));
    qga.setTimeError = new EngineError(
      'guest_agent',
      'guest agent guest-set-time failed: this feature or command is not currently supported',
    );
    const r = await reidentifyGuest(qga, opts(), { timeoutMs: 5_000 });
    expect(qga.calls).toEqual(['sync', 'setTime', 'exec /bin/date -u', 'exec /bin/sh -c']);
    expect(r.clock).toBe('date');
    expect(dateArgs(1_700_000_000_000_000_123n)).toEqual(['-u', '-s', '@1700000000.000000123']);
  });

  it('passes other agent failures through', async () => {
    const qga = new HostQga(makeRoot('timeout'));
    qga.setTimeError = new EngineError('timeout', 'no reply');
    await expect(reidentifyGuest(qga, opts(), { timeoutMs: 5_000 })).rejects.toMatchObject({
      code: 'timeout',
    });
    expect(qga.calls).toEqual(['sync', 'setTime']);
  });

  it('throws ReidentifyError with the script stderr when the script fails', async () => {
    const root = makeRoot('fails');
    // Make /etc/hostname a directory: the rename onto it fails.
    rmSync(join(root, 'etc', 'hostname'));
    mkdirSync(join(root, 'etc', 'hostname', 'x'), { recursive: true });
    const qga = new HostQga(root);
    const err: unknown = await reidentifyGuest(qga, opts(), { timeoutMs: 5_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReidentifyError);
    expect((err as ReidentifyError).exitcode).toBe(1);
    expect((err as ReidentifyError).stderr).toContain('cannot write /etc/hostname');
    expect((err as Error).message).toContain('cannot write /etc/hostname');
  });

  it('checks the input before touching the guest', async () => {
    const qga = new HostQga(makeRoot('early'));
    await expect(reidentifyGuest(qga, opts({ hostname: 'bad name' }), { timeoutMs: 5_000 })).rejects.toThrow(
      /invalid hostname/,
    );
    expect(qga.calls).toEqual([]);
  });
});
