// The helper's closed vocabulary: every verb's validate() against a table of hostile inputs.
import { describe, expect, it } from 'vitest';
import {
  checkBridge,
  checkGatewayCidr,
  checkGuestIp,
  checkPort,
  checkTap,
  checkVmId,
  poolContext,
  validateClearResolverRouting,
  validateCreateTap,
  validateDeleteTap,
  validateEnsureBridge,
  validateEnsureNat,
  validateRemoveNat,
  validateSyncResolverRouting,
} from '../../src/helper/validate.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';

const ctx = poolContext('10.213.0.0/16');

function rejects(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ErrorResponse);
    expect((err as ErrorResponse).code).toBe('bad_request');
    return (err as ErrorResponse).message;
  }
  throw new Error('expected bad_request, got success');
}

// Values that are never a name, an address or a port.
const JUNK: unknown[] = [
  undefined,
  null,
  '',
  ' ',
  0,
  -1,
  2 ** 64,
  NaN,
  true,
  [],
  ['br-banger'],
  {},
  { toString: () => 'br-banger' },
  '\0',
  'a\nb',
  '../../etc/passwd',
  '/dev/net/tun',
  '$(reboot)',
  '`id`',
  ';rm -rf /',
  'x'.repeat(100_000),
];

const HOSTILE_IFNAMES = [
  'eth0',
  'lo',
  'docker0',
  'virbr0',
  'br0',
  'wlan0',
  'br-banger-too-long',
  'br-bangerX',
  'BR-BANGER',
  ' br-banger',
  'br-banger ',
  'br-banger\n',
  'br-banger;ls',
  'br-banger/..',
  'br-banger\u00e9',
  'br-banger\u200b',
  'br_banger',
  'bgt0123456789ab',
  'tap0',
];

const HOSTILE_TAPS = [
  'bgt',
  'bgt0123456789a',
  'bgt0123456789abc',
  'bgt0123456789AB',
  'bgt01234567890g',
  'bgt-123456789ab',
  'bgt../../../etc',
  'BGT0123456789ab',
  'tap0123456789ab',
  ' bgt0123456789ab',
  'bgt0123456789ab\n',
  'eth0',
  'lo',
  'br-banger',
];

describe('names', () => {
  it.each([...JUNK, ...HOSTILE_IFNAMES])('checkBridge refuses %j', (v) => {
    expect(rejects(() => checkBridge(v))).toMatch(/not banger's/);
  });
  it.each(['br-banger', 'br-banger0', 'br-banger-dev', 'br-banger123456'])('checkBridge accepts %s', (v) => {
    expect(checkBridge(v)).toBe(v);
    expect(Buffer.byteLength(v)).toBeLessThanOrEqual(15);
  });
  it.each([...JUNK, ...HOSTILE_TAPS])('checkTap refuses %j', (v) => {
    rejects(() => checkTap(v));
  });
  it('checkTap accepts a VM tap, which fits IFNAMSIZ exactly', () => {
    expect(checkTap('bgt0123456789ab')).toBe('bgt0123456789ab');
    expect('bgt0123456789ab'.length).toBe(15);
  });
  it.each([...JUNK, '0123456789a', '0123456789abc', '0123456789AB', 'ghijklmnopqr', '../0123456789'])(
    'checkVmId refuses %j',
    (v) => {
      rejects(() => checkVmId(v));
    },
  );
});

describe('addresses', () => {
  it.each([
    ...JUNK,
    '10.213.0.1',
    '10.213.0.1/',
    '10.213.0.1/24/1',
    '10.213.0.1/33',
    '10.213.0.1/-1',
    '10.213.0.1/024',
    '10.213.0.1/8',
    '10.213.0.1/15',
    '10.213.0.1/30',
    '10.213.0.1/32',
    '0.0.0.0/0',
    '10.214.0.1/24',
    '8.8.8.1/24',
    '127.0.0.1/24',
    '10.213.0.0/24',
    '10.213.0.255/24',
    '010.213.0.1/24',
    '10.213.0.256/24',
    '10.213.0.1 /24',
    '10.213.0.1/24 ',
    '::1/64',
    '10.213.0.1/24\n',
    '10.213.1/24',
    '1e1.213.0.1/24',
  ])('checkGatewayCidr refuses %j', (v) => {
    rejects(() => checkGatewayCidr(v, ctx));
  });
  it.each(['10.213.0.1/24', '10.213.7.1/24', '10.213.0.1/16', '10.213.200.9/29'])(
    'checkGatewayCidr accepts %s',
    (v) => {
      expect(checkGatewayCidr(v, ctx)).toBe(v);
    },
  );
  it.each([
    ...JUNK,
    '10.213.0.0',
    '10.213.255.255',
    '10.212.255.254',
    '10.214.0.1',
    '8.8.8.8',
    '127.0.0.1',
    '0.0.0.0',
    '255.255.255.255',
    '10.213.0.2/24',
    '10.213.00.2',
    '10.213.0.2 ',
    '10.213.0.-2',
    '4294967295',
    '0x0a.213.0.2',
  ])('checkGuestIp refuses %j', (v) => {
    rejects(() => checkGuestIp(v, ctx));
  });
  it('checkGuestIp accepts a host of the pool', () => {
    expect(checkGuestIp('10.213.0.2', ctx)).toBe('10.213.0.2');
    expect(checkGuestIp('10.213.255.254', ctx)).toBe('10.213.255.254');
  });
  it.each([...JUNK, 0, 65536, 1.5, 2 ** 53, -53, '53', Infinity])('checkPort refuses %j', (v) => {
    rejects(() => checkPort(v));
  });
  it('a pool must be a network block of sane size', () => {
    expect(() => poolContext('10.213.0.1/16')).toThrow(/host bits/);
    expect(() => poolContext('0.0.0.0/0')).toThrow(/prefix/);
    expect(() => poolContext('nope')).toThrow(/invalid address pool/);
    expect(poolContext('172.30.0.0/20').pool.prefix).toBe(20);
  });
});

describe('verbs', () => {
  const ok = {
    bridge: { bridge: 'br-banger', address: '10.213.0.1/24' },
    tap: { tap: 'bgt0123456789ab', bridge: 'br-banger' },
    nat: { vm_id: '0123456789ab', guest_ip: '10.213.0.2', bridge: 'br-banger' },
  };

  it('accept well-formed params and return exactly the checked fields', () => {
    expect(validateEnsureBridge({ ...ok.bridge }, ctx)).toEqual(ok.bridge);
    expect(validateEnsureBridge({ ...ok.bridge, dns_port: 5354 }, ctx)).toEqual({
      ...ok.bridge,
      dns_port: 5354,
    });
    expect(validateCreateTap({ ...ok.tap })).toEqual(ok.tap);
    expect(validateDeleteTap({ tap: ok.tap.tap })).toEqual({ tap: ok.tap.tap });
    expect(validateEnsureNat({ ...ok.nat }, ctx)).toEqual(ok.nat);
    expect(validateRemoveNat({ vm_id: ok.nat.vm_id })).toEqual({ vm_id: ok.nat.vm_id });
    expect(validateSyncResolverRouting({ bridge: 'br-banger', dns_port: 5354 })).toEqual({
      bridge: 'br-banger',
      dns_port: 5354,
    });
    expect(validateClearResolverRouting({ bridge: 'br-banger' })).toEqual({ bridge: 'br-banger' });
  });

  type Case = [string, () => unknown];
  const cases: Case[] = [
    ['ensure_bridge: not an object', () => validateEnsureBridge('br-banger', ctx)],
    ['ensure_bridge: array', () => validateEnsureBridge([ok.bridge], ctx)],
    ['ensure_bridge: null', () => validateEnsureBridge(null, ctx)],
    ['ensure_bridge: eth0', () => validateEnsureBridge({ ...ok.bridge, bridge: 'eth0' }, ctx)],
    ['ensure_bridge: lo', () => validateEnsureBridge({ ...ok.bridge, bridge: 'lo' }, ctx)],
    [
      'ensure_bridge: outside pool',
      () => validateEnsureBridge({ ...ok.bridge, address: '192.168.1.1/24' }, ctx),
    ],
    ['ensure_bridge: /8', () => validateEnsureBridge({ ...ok.bridge, address: '10.213.0.1/8' }, ctx)],
    ['ensure_bridge: extra field', () => validateEnsureBridge({ ...ok.bridge, dev: 'eth0' }, ctx)],
    [
      'ensure_bridge: __proto__',
      () =>
        validateEnsureBridge(
          JSON.parse('{"__proto__":{"x":1},"bridge":"br-banger","address":"10.213.0.1/24"}'),
          ctx,
        ),
    ],
    ['ensure_bridge: dns_port 0', () => validateEnsureBridge({ ...ok.bridge, dns_port: 0 }, ctx)],
    ['ensure_bridge: dns_port string', () => validateEnsureBridge({ ...ok.bridge, dns_port: '5354' }, ctx)],
    ['ensure_bridge: dns_port huge', () => validateEnsureBridge({ ...ok.bridge, dns_port: 2 ** 31 }, ctx)],
    ['ensure_bridge: missing address', () => validateEnsureBridge({ bridge: 'br-banger' }, ctx)],
    ['ensure_bridge: empty', () => validateEnsureBridge({}, ctx)],
    ['create_tap: eth0 as tap', () => validateCreateTap({ ...ok.tap, tap: 'eth0' })],
    ['create_tap: overlong', () => validateCreateTap({ ...ok.tap, tap: `bgt${'a'.repeat(13)}` })],
    ['create_tap: foreign bridge', () => validateCreateTap({ ...ok.tap, bridge: 'docker0' })],
    ['create_tap: owner smuggled', () => validateCreateTap({ ...ok.tap, owner_uid: 0 })],
    ['delete_tap: lo', () => validateDeleteTap({ tap: 'lo' })],
    ['delete_tap: eth0', () => validateDeleteTap({ tap: 'eth0' })],
    ['delete_tap: bridge', () => validateDeleteTap({ tap: 'br-banger' })],
    ['delete_tap: path', () => validateDeleteTap({ tap: '../../../dev/null' })],
    ['delete_tap: number', () => validateDeleteTap({ tap: 12345 })],
    ['ensure_nat: 0.0.0.0', () => validateEnsureNat({ ...ok.nat, guest_ip: '0.0.0.0' }, ctx)],
    ['ensure_nat: outside pool', () => validateEnsureNat({ ...ok.nat, guest_ip: '192.168.0.5' }, ctx)],
    [
      'ensure_nat: CIDR instead of address',
      () => validateEnsureNat({ ...ok.nat, guest_ip: '10.213.0.0/16' }, ctx),
    ],
    ['ensure_nat: bad vm id', () => validateEnsureNat({ ...ok.nat, vm_id: 'x; nft flush ruleset' }, ctx)],
    ['ensure_nat: eth0 bridge', () => validateEnsureNat({ ...ok.nat, bridge: 'eth0' }, ctx)],
    ['remove_nat: empty', () => validateRemoveNat({ vm_id: '' })],
    ['remove_nat: huge', () => validateRemoveNat({ vm_id: 'f'.repeat(1_000_000) })],
    ['sync_resolver: port 0', () => validateSyncResolverRouting({ bridge: 'br-banger', dns_port: 0 })],
    ['sync_resolver: huge port', () => validateSyncResolverRouting({ bridge: 'br-banger', dns_port: 1e12 })],
    [
      'sync_resolver: string port',
      () => validateSyncResolverRouting({ bridge: 'br-banger', dns_port: '53' }),
    ],
    ['sync_resolver: lo', () => validateSyncResolverRouting({ bridge: 'lo', dns_port: 5354 })],
    ['clear_resolver: eth0', () => validateClearResolverRouting({ bridge: 'eth0' })],
  ];
  it.each(cases)('refuse %s', (_name, fn) => {
    rejects(fn);
  });
});
