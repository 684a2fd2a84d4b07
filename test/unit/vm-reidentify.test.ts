import { spawn, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EngineError } from '../../src/engine/errors.ts';
import type { QgaExecOptions, QgaExecResult } from '../../src/engine/qga.ts';
import { FREESTANDING_CC_ARGS, findGuestDir } from '../../src/image/recipe.ts';
import { generateHostKey, type HostKey } from '../../src/image/seed.ts';
import {
  clockArg,
  guestStages,
  newReadyToken,
  readyLine,
  reidentifyGuest,
  reidentifyInput,
  reidentifyScript,
  ReidentifyError,
  startReidentifyWaiter,
  waiterWaits,
  watchFileFor,
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
  it('writes one key=value line per value: the key’s lines comma-joined, entropy in hex', () => {
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
    expect(`${m.get('host_key')!.split(',').join('\n')}\n`).toBe(key.privateKey);
    expect(m.get('host_key_pub')).toBe(key.publicKey);
    expect(Buffer.from(m.get('entropy')!, 'hex')).toEqual(Buffer.alloc(64, 7));
    expect(m.get('mac')).toBe('52:54:00:ab:cd:ef'); // lowercased for the script
    expect(m.get('nameservers')).toBe('10.20.0.1,2001:db8::1');
  });

  it('makes fresh entropy when none is given, and leaves the network out without net', () => {
    const a = parseInput(reidentifyInput(opts({ entropy: undefined })));
    const b = parseInput(reidentifyInput(opts({ entropy: undefined })));
    expect(Buffer.from(a.get('entropy')!, 'hex')).toHaveLength(64);
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
    // Written in place (no process for a rename): the file keeps its mode.
    expect(mode(join(etc, 'machine-id'))).toBe(0o644);
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

    // What an SSH login depends on first (RNG, host key, address), then hostname and networkd.
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toEqual([
      'dry-run: perl ioctl /dev/urandom RNDADDENTROPY 64 bytes (512 bits), RNDRESEEDCRNG',
      'dry-run: ip link set dev eth0 down',
      'dry-run: ip link set dev eth0 address 52:54:00:ab:cd:ef',
      'dry-run: ip link set dev eth0 up',
      'dry-run: ip addr flush dev eth0',
      'dry-run: ip addr replace 10.20.0.5/24 dev eth0',
      'dry-run: ip route replace default via 10.20.0.1',
      'dry-run: hostname dev-2',
      'dry-run: networkctl reload',
      expect.stringMatching(
        /^banger-reidentify: times: begin@[\d.]+ checked@[\d.]+ clock@[\d.]+ rng@[\d.]+ keys@[\d.]+ net@[\d.]+ files@[\d.]+$/,
      ),
      'banger-reidentify: ok machine-id hostname host-key entropy network dns (dry run)',
    ]);
  });

  it('uses the image’s banger-reseed for the clock and the RNG when it has one', () => {
    const root = makeRoot('reseed');
    mkdirSync(join(root, 'usr', 'lib', 'banger'), { recursive: true });
    writeFileSync(join(root, 'usr', 'lib', 'banger', 'banger-reseed'), '', { mode: 0o755 });
    const r = runScript(shell, root, reidentifyInput(opts({ clockNs: 1_700_000_000_000_000_123n })));
    expect(r.status).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('dry-run: banger-reseed 1700000000.000000123 <64 bytes>');
    expect(r.stdout).not.toContain('perl');
    expect(r.stdout).not.toContain('date -u');
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
        () => good().replace(/host_key_pub=.*/, 'host_key_pub=ssh-rsa AAAAB3Nza x'),
        /ssh-ed25519/,
      ],
      [
        'a public key with a control character',
        () => good().replace(/host_key_pub=.*/, `host_key_pub=${key.publicKey}\t$(reboot)`),
        /control/,
      ],
      [
        'a private key that is not one',
        () => good().replace(/host_key=.*/, 'host_key=#!/bin/sh,reboot'),
        /private key/,
      ],
      [
        'a private key with something after it',
        () => good().replace(/host_key=(.*)/, (_m, k: string) => `host_key=${k},extra`),
        /private key/,
      ],
      [
        'a private key with a shell line inside',
        () => good().replace(/host_key=([^,]*),/, (_m, k: string) => `host_key=${k},$(reboot),`),
        /private key/,
      ],
      ['non-hex entropy', () => good().replace(/entropy=.*/, 'entropy=$(reboot)'), /entropy/],
      ['too little entropy', () => good().replace(/entropy=.*/, 'entropy=abcd'), /32 to 512/],
      ['odd-length entropy', () => good().replace(/entropy=.*/, `entropy=${'a'.repeat(65)}`), /32 to 512/],
      ['a bad clock', () => `${good()}clock=1700000000;reboot\n`, /invalid clock/],
      ['a clock without nanoseconds', () => `${good()}clock=1700000000.5\n`, /invalid clock/],
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

interface HostChild {
  exited: Promise<QgaExecResult>;
  result?: QgaExecResult;
}

/** A stand-in for QgaClient that runs guest-exec'd commands on the host, under a test root. */
class HostQga {
  private readonly children = new Map<number, HostChild>();
  readonly calls: string[] = [];
  readonly root: string;
  constructor(root: string) {
    this.root = root;
  }
  syncError: Error | undefined;
  sync(): Promise<void> {
    this.calls.push('sync');
    return this.syncError ? Promise.reject(this.syncError) : Promise.resolve();
  }
  exec(path: string, args: string[], o: QgaExecOptions): Promise<QgaExecResult> {
    this.calls.push(`exec ${path} ${args[0] ?? ''}`);
    o.onSpawned?.(4242);
    const r = spawnSync(path, args, {
      input: o.inputData,
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BANGER_REID_ROOT: this.root },
    });
    this.lastStdout = r.stdout;
    return Promise.resolve({ exitcode: r.status, stdout: r.stdout, stderr: r.stderr });
  }
  lastStdout = '';
  /** guest-exec without waiting: stdin is /dev/null, as the agent's without input-data. */
  spawn(path: string, args: string[]): Promise<number> {
    this.calls.push(`spawn ${path} ${args.slice(2).join(' ')}`);
    const child = spawn(path, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BANGER_REID_ROOT: this.root },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const entry: HostChild = {
      exited: new Promise((resolve) =>
        child.on('close', (code) => {
          entry.result = { exitcode: code, stdout, stderr };
          this.lastStdout = stdout;
          resolve(entry.result);
        }),
      ),
    };
    this.children.set(child.pid!, entry);
    return Promise.resolve(child.pid!);
  }
  /** As the agent: undefined while its child runs, a pid it never started is an error. */
  execStatus(pid: number): Promise<QgaExecResult | undefined> {
    this.calls.push(`execStatus ${pid}`);
    const child = this.children.get(pid);
    if (!child) return Promise.reject(new EngineError('guest_agent', `Invalid parameter 'pid'`));
    return Promise.resolve(child.result);
  }
  waitExec(pid: number): Promise<QgaExecResult> {
    this.calls.push(`waitExec ${pid}`);
    return this.children.get(pid)!.exited;
  }
  /** guest-file-open refused, as QgaClient reports it (nothing written). */
  refuseOpen = false;
  writeFile(path: string, data: Buffer): Promise<void> {
    this.calls.push(`writeFile ${path}`);
    if (this.refuseOpen)
      return Promise.reject(
        new EngineError('guest_agent', 'Permission denied', { details: { path, opened: false } }),
      );
    writeFileSync(path, data);
    return Promise.resolve();
  }
}

describe('reidentifyGuest', () => {
  it('syncs, then runs the script with the input, the clock (the host time) first', async () => {
    const root = makeRoot('guest');
    const qga = new HostQga(root);
    const before = Date.now() / 1000;
    const r = await reidentifyGuest(qga, opts(), { timeoutMs: 5_000 });
    // No guest-set-time: it would also write the RTC, which costs ~0.9 s in a guest.
    expect(qga.calls).toEqual(['sync', 'exec /bin/sh -c']);
    expect(r.summary).toMatch(
      /^banger-reidentify: ok clock machine-id hostname host-key entropy \(dry run\) \(agent sync \d+ ms, exec reply \d+ ms, script \d+ ms: checked \d+ ms, clock \d+ ms, rng \d+ ms, keys \d+ ms, files \d+ ms; in the guest \d+ ms\)$/,
    );
    const set = /dry-run: date -u -s @(\d+\.\d{9})/.exec(qga.lastStdout);
    expect(set).not.toBeNull();
    expect(Number(set![1])).toBeGreaterThanOrEqual(Math.floor(before));
    expect(Number(set![1])).toBeLessThanOrEqual(Date.now() / 1000 + 1);
    expect(qga.lastStdout.split('\n')[0]).toMatch(/^dry-run: date /); // first thing it does
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
    expect(readFileSync(join(root, 'etc', 'hostname'), 'utf8')).toBe('dev-2\n');
    expect(reidentifyScript()).toBe(readFileSync(SCRIPT, 'utf8'));
    expect(clockArg(1_700_000_000_000_000_123n)).toBe('1700000000.000000123');
  });

  it('passes agent failures through', async () => {
    const qga = new HostQga(makeRoot('timeout'));
    qga.syncError = new EngineError('timeout', 'no reply');
    await expect(reidentifyGuest(qga, opts(), { timeoutMs: 5_000 })).rejects.toMatchObject({
      code: 'timeout',
    });
    expect(qga.calls).toEqual(['sync']);
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

describe('a warm template’s waiting banger-reidentify', () => {
  it('waits on a FIFO whose name is gone, then takes a clone’s identity through /proc/PID/fd/0', async () => {
    const root = makeRoot('waiter');
    const qga = new HostQga(root);
    const fifo = join(root, 'reid.fifo');
    const { pid } = await startReidentifyWaiter(qga, { timeoutMs: 5_000, fifo });
    expect(existsSync(fifo)).toBe(false);
    expect(readlinkSync(`/proc/${pid}/fd/0`)).toBe(`${fifo} (deleted)`);
    expect(await qga.execStatus(pid)).toBeUndefined(); // still waiting
    expect(readFileSync(join(root, 'etc', 'hostname'), 'utf8')).toBe('template\n');

    const r = await reidentifyGuest(qga, opts(), { timeoutMs: 5_000, waiter: { pid } });
    // Asked whether it still waits (once by the test above, once by reidentifyGuest) first.
    expect(qga.calls.slice(3)).toEqual([
      'sync',
      `execStatus ${pid}`,
      `writeFile /proc/${pid}/fd/0`,
      `waitExec ${pid}`,
    ]);
    expect(r.summary).toMatch(
      /^banger-reidentify: ok clock machine-id hostname host-key entropy \(dry run\) \(agent sync \d+ ms, input written \d+ ms, script \d+ ms: checked \d+ ms, clock \d+ ms, rng \d+ ms, keys \d+ ms, files \d+ ms; in the guest \d+ ms\)$/,
    );
    expect(readFileSync(join(root, 'etc', 'hostname'), 'utf8')).toBe('dev-2\n');
    expect(readFileSync(join(root, 'etc', 'machine-id'), 'utf8')).toBe('0123456789abcdef0123456789abcdef\n');
    expect(readFileSync(join(root, 'etc', 'ssh', 'ssh_host_ed25519_key'), 'utf8')).toBe(key.privateKey);
    // /etc/hosts as it was read before the wait, with the clone's own 127.0.1.1 line.
    expect(readFileSync(join(root, 'etc', 'hosts'), 'utf8')).toBe(
      '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\tdev-2\n',
    );
  });

  it('with a console and a ready token, writes the ready line once the key, address and RNG are in place, before the rest', async () => {
    const root = makeRoot('waiter-ready');
    mkdirSync(join(root, 'dev'));
    const consoleFile = join(root, 'dev', 'ttyS0');
    writeFileSync(consoleFile, 'template boot log\n');
    const qga = new HostQga(root);
    const w = await startReidentifyWaiter(qga, { timeoutMs: 5_000, fifo: join(root, 'rd.fifo') });
    const token = newReadyToken();
    const watch = watchFileFor(consoleFile, readyLine(token), 10);
    let seenAt: number | undefined;
    void watch.seen.then(() => (seenAt = performance.now()));
    const r = await reidentifyGuest(qga, opts({ net: NET, readyToken: token }), {
      timeoutMs: 5_000,
      waiter: w,
    });
    const doneAt = performance.now();
    await watch.seen;
    expect(seenAt).toBeLessThanOrEqual(doneAt);
    expect(readFileSync(consoleFile, 'utf8')).toBe(`template boot log\nbanger-reidentify ready ${token}\n`);
    // In the guest: the host key, the address (net) and the reseed before the line, the rest after.
    const times = /times:(.*)$/m.exec(qga.lastStdout)![1]!;
    expect([...times.matchAll(/(\w+)@/g)].map((m) => m[1])).toEqual([
      'begin',
      'checked',
      'clock',
      'rng',
      'keys',
      'net',
      'ready',
      'files',
    ]);
    expect(r.summary).toContain('ready ');
    const out = qga.lastStdout.split('\n');
    expect(out.indexOf('dry-run: ip route replace default via 10.20.0.1')).toBeLessThan(
      out.indexOf('dry-run: hostname dev-2'),
    );
    expect(readFileSync(join(root, 'etc', 'hostname'), 'utf8')).toBe('dev-2\n');
  });

  it('a ready token without a console (or from the agent-run script) only costs the line', async () => {
    const root = makeRoot('waiter-noconsole');
    const qga = new HostQga(root);
    const w = await startReidentifyWaiter(qga, { timeoutMs: 5_000, fifo: join(root, 'nc.fifo') });
    const r = await reidentifyGuest(qga, opts({ readyToken: newReadyToken() }), {
      timeoutMs: 5_000,
      waiter: w,
    });
    expect(r.summary).not.toContain('ready ');
    expect(readFileSync(join(root, 'etc', 'hostname'), 'utf8')).toBe('dev-2\n');
    const again = await reidentifyGuest(qga, opts({ readyToken: newReadyToken() }), { timeoutMs: 5_000 });
    expect(again.summary).toMatch(/^banger-reidentify: ok /);
    expect(() => reidentifyInput(opts({ readyToken: 'ABC' }))).toThrow(/readyToken/);
    expect(() => reidentifyInput(opts({ readyToken: '0'.repeat(32) }))).toThrow(/readyToken/);
  });

  it('never writes to a waiter that is gone (exited, or a pid the agent does not know): the agent runs the script', async () => {
    const root = makeRoot('waiter-gone');
    const qga = new HostQga(root);
    const { pid } = await startReidentifyWaiter(qga, { timeoutMs: 5_000, fifo: join(root, 'g.fifo') });
    process.kill(pid, 'SIGKILL');
    await qga.waitExec(pid);
    const r = await reidentifyGuest(qga, opts(), { timeoutMs: 5_000, waiter: { pid } });
    expect(r.summary).toContain(`waiter ${pid} gone`);
    expect(readFileSync(join(root, 'etc', 'hostname'), 'utf8')).toBe('dev-2\n');
    // A live process the agent never started (the waiter's pid reused): nothing goes to its stdin.
    const other = spawn('cat', [], { stdio: ['pipe', 'pipe', 'ignore'] });
    let got = '';
    other.stdout.on('data', (b: Buffer) => (got += b.toString()));
    try {
      await reidentifyGuest(qga, opts(), { timeoutMs: 5_000, waiter: { pid: other.pid! } });
    } finally {
      other.stdin.end();
      await new Promise((resolve) => other.on('close', resolve));
    }
    expect(got).toBe('');
    expect(qga.calls.filter((c) => c.startsWith('writeFile'))).toEqual([]);
    // The waiter's start-up check, then the agent-run script of each clone.
    expect(qga.calls.filter((c) => c.startsWith('exec /bin/sh -c'))).toHaveLength(3);
  });

  it('a waiter whose stdin the agent cannot open gets nothing: the agent runs the script', async () => {
    const root = makeRoot('waiter-refused');
    const qga = new HostQga(root);
    const { pid } = await startReidentifyWaiter(qga, { timeoutMs: 5_000, fifo: join(root, 'r.fifo') });
    qga.refuseOpen = true;
    try {
      const r = await reidentifyGuest(qga, opts(), { timeoutMs: 5_000, waiter: { pid } });
      expect(r.summary).toContain(`waiter ${pid} refused its input`);
      expect(readFileSync(join(root, 'etc', 'hostname'), 'utf8')).toBe('dev-2\n');
      expect(qga.calls.at(-1)).toBe('exec /bin/sh -c');
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });

  it('waiterWaits: yes while the agent says it runs; no once it exited or for a pid it does not know', async () => {
    const root = makeRoot('waiter-waits');
    const qga = new HostQga(root);
    const w = await startReidentifyWaiter(qga, { timeoutMs: 5_000, fifo: join(root, 'ww.fifo') });
    expect(await waiterWaits(qga, w, 1_000)).toBe(true);
    process.kill(w.pid, 'SIGKILL');
    await qga.waitExec(w.pid);
    expect(await waiterWaits(qga, w, 1_000)).toBe(false);
    expect(await waiterWaits(qga, { pid: 1 }, 1_000)).toBe(false);
    // Any other agent failure is the caller's.
    const broken = { execStatus: () => Promise.reject(new EngineError('timeout', 'no reply')) };
    await expect(waiterWaits(broken, w, 1_000)).rejects.toMatchObject({ code: 'timeout' });
  });

  it('reports a waiter that exits instead of waiting, with its stderr', async () => {
    const qga = new HostQga(makeRoot('waiter-bad'));
    await expect(startReidentifyWaiter(qga, { timeoutMs: 5_000, fifo: 'relative.fifo' })).rejects.toThrow(
      /did not start waiting \(it exited 2: banger-reidentify: --wait needs an absolute FIFO path\)/,
    );
  });

  it('fails in the script as the agent-run one does, with its stderr', async () => {
    const root = makeRoot('waiter-fails');
    const qga = new HostQga(root);
    const { pid } = await startReidentifyWaiter(qga, { timeoutMs: 5_000, fifo: join(root, 'w.fifo') });
    const err: unknown = await reidentifyGuest(qga, opts({ entropy: Buffer.alloc(32, 1) }), {
      timeoutMs: 5_000,
      waiter: { pid },
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeUndefined(); // 32 bytes is the minimum: accepted
    rmSync(join(root, 'etc', 'hostname'));
    mkdirSync(join(root, 'etc', 'hostname', 'x'), { recursive: true });
    const again = await startReidentifyWaiter(qga, { timeoutMs: 5_000, fifo: join(root, 'w2.fifo') });
    const failed: unknown = await reidentifyGuest(qga, opts(), { timeoutMs: 5_000, waiter: again }).catch(
      (e: unknown) => e,
    );
    expect(failed).toBeInstanceOf(ReidentifyError);
    expect((failed as ReidentifyError).stderr).toContain('cannot write /etc/hostname');
  });
});

describe('watchFileFor', () => {
  it('sees the needle in what is appended after it began, also split across two writes', async () => {
    const f = join(tmp.dir, 'serial.log');
    writeFileSync(f, 'old banger-reidentify ready aaaa\n');
    const w = watchFileFor(f, 'banger-reidentify ready aaaa', 10);
    let seen = false;
    void w.seen.then(() => (seen = true));
    await new Promise((r) => setTimeout(r, 60));
    expect(seen).toBe(false); // what was there before does not count
    appendFileSync(f, 'console noise\nbanger-reidentify rea');
    await new Promise((r) => setTimeout(r, 60));
    expect(seen).toBe(false);
    appendFileSync(f, 'dy aaaa\r\n');
    await w.seen;
    w.stop();
  });

  it('waits for a file that is not there yet, and stop() ends the watch', async () => {
    const f = join(tmp.dir, 'later.log');
    rmSync(f, { force: true });
    const w = watchFileFor(f, 'needle', 10);
    let seen = false;
    void w.seen.then(() => (seen = true));
    writeFileSync(f, 'a needle\n');
    await w.seen;
    const f2 = join(tmp.dir, 'stopped.log');
    writeFileSync(f2, '');
    const w2 = watchFileFor(f2, 'needle', 10);
    let seen2 = false;
    void w2.seen.then(() => (seen2 = true));
    w2.stop();
    appendFileSync(f2, 'needle\n');
    await new Promise((r) => setTimeout(r, 60));
    expect([seen, seen2]).toEqual([true, false]);
  });
});

describe('guestStages', () => {
  it('turns the script’s stage@uptime pairs into durations', () => {
    expect(guestStages('banger-reidentify: times: start@12.30 clock@12.32 files@12.40 rng@12.71')).toBe(
      'clock 20 ms, files 80 ms, rng 310 ms; in the guest 410 ms',
    );
    // The script's own marks: begin (the shell runs it) and checked (its input read and checked).
    expect(
      guestStages('banger-reidentify: times: begin@7.00 checked@7.04 clock@7.06 rng@7.06 files@7.13'),
    ).toBe('checked 40 ms, clock 20 ms, rng 0 ms, files 70 ms; in the guest 130 ms');
    expect(guestStages('banger-reidentify: times: begin@7.00')).toBeUndefined();
    expect(guestStages('banger-reidentify: times:')).toBeUndefined();
    expect(guestStages(undefined)).toBeUndefined();
  });
});

// The freestanding helper itself, compiled the way the image builder does. Run unprivileged
// only: as root it would set this host's clock.
const haveGcc = spawnSync('sh', ['-c', 'command -v gcc && command -v setpriv']).status === 0;
describe.skipIf(!haveGcc || process.getuid?.() !== 0)('guest/src/banger-reseed.c', () => {
  const bin = join(tmp.dir, 'banger-reseed');
  beforeAll(() => {
    const src = join(findGuestDir(), 'src', 'banger-reseed.c');
    const cc = spawnSync('gcc', [...FREESTANDING_CC_ARGS, '-o', bin, src], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
  });
  /** As nobody: every privileged call fails with EPERM, so nothing on this host changes. */
  const run = (...args: string[]): { status: number | null; stderr: string } => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', bin, ...args], {
      encoding: 'utf8',
    });
    return { status: r.status, stderr: r.stderr };
  };
  const hex = 'ab'.repeat(64);

  it('is small and static', () => {
    const size = statSync(bin).size;
    expect(size).toBeLessThan(16_384);
    expect(readFileSync(bin).includes(Buffer.from('ld-linux'))).toBe(false);
  });

  it.each<[string, string[], number, RegExp]>([
    ['no arguments', [], 2, /usage/],
    ['a clock without nanoseconds', ['1700000000.5', hex], 2, /bad clock/],
    ['a clock with junk', ['1700000000.000000000x', hex], 2, /bad clock/],
    ['a clock with a leading zero', ['0700000000.000000000', hex], 2, /bad clock/],
    ['too little entropy', ['-', 'abcd'], 2, /32 to 512/],
    ['uppercase hex', ['-', 'AB'.repeat(64)], 2, /lowercase hex/],
    ['odd hex', ['-', `${hex}a`], 2, /32 to 512/],
  ])('refuses %s (exit 2)', (_what, args, code, message) => {
    const r = run(...args);
    expect(r.status).toBe(code);
    expect(r.stderr).toMatch(message);
  });

  it('reaches the kernel: clock_settime, then the RNG ioctls, each refused to an unprivileged user', () => {
    expect(run('1700000000.000000123', hex)).toEqual({
      status: 3,
      stderr: 'banger-reseed: clock_settime failed\n',
    });
    expect(run('-', hex)).toEqual({ status: 5, stderr: 'banger-reseed: RNDADDENTROPY failed\n' });
  });
});
