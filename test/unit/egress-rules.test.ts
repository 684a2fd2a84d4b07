import { describe, expect, it } from 'vitest';
import {
  ALL_RULE,
  EgressRuleError,
  MAX_EGRESS_RULES,
  formatEgress,
  parseEgress,
  ruleFor,
} from '../../src/egress/rules.ts';

// Every text here must be refused, with a message that names the problem.
const HOSTILE: [string, RegExp][] = [
  ['', /empty/],
  [' all', /spaces/],
  ['all ', /spaces/],
  ['allow=a.com, b.com', /spaces/],
  ['allow=a.com\tb.com', /spaces/],
  ['allow=a.com\nb.com', /spaces/],
  ['ALL', /lower case/],
  ['Allow=a.com', /lower case/],
  ['some', /not one of/],
  ['allow', /not one of/],
  ['allow=', /at least one rule/],
  ['allow=,', /empty rule/],
  ['allow=a.com,', /empty rule/],
  ['allow=a.com,,b.com', /empty rule/],
  ['allow=*.*.com', /label/],
  ['allow=*foo.com', /wildcard/],
  ['allow=foo.*.com', /wildcard/],
  ['allow=foo.com*', /wildcard/],
  ['allow=*', /wildcard/],
  ['allow=*.', /empty domain/],
  ['allow=**.com', /wildcard/],
  ['allow=300.1.1.1', /IPv4/],
  ['allow=1.2.3', /IPv4/],
  ['allow=1.2.3.4.5', /IPv4/],
  ['allow=01.2.3.4', /IPv4/],
  ['allow=1.2.3.4/33', /prefix/],
  ['allow=1.2.3.4/-1', /prefix/],
  ['allow=1.2.3.4/', /prefix/],
  ['allow=1.2.3.4/08', /prefix/],
  ['allow=1.2.3.4/8/8', /more than one/],
  ['allow=a.com/8', /IPv4/],
  ['allow=a.com:0', /out of range/],
  ['allow=a.com:70000', /out of range/],
  ['allow=a.com:65536', /out of range/],
  ['allow=a.com:', /port/],
  ['allow=a.com:-1', /port/],
  ['allow=a.com:+80', /port/],
  ['allow=a.com:080', /port/],
  ['allow=a.com:http', /port/],
  ['allow=:80', /no destination/],
  ['allow=::1', /IPv6/],
  ['allow=[::1]:443', /IPv6/],
  ['allow=a.com:80:81', /IPv6/],
  ['allow=bücher.de', /ASCII|punycode/],
  ['allow=exa\u200bmple.com', /ASCII/],
  ['allow=a.com\0', /ASCII/],
  ['allow=-a.com', /label/],
  ['allow=a-.com', /label/],
  ['allow=a_b.com', /label/],
  ['allow=a..com', /empty label/],
  ['allow=.a.com', /empty label/],
  ['allow=a.com..', /empty label/],
  ['allow=1.2.3.999', /IPv4/],
  ['allow=example.123', /neither/],
  ['allow=a.com,a.com', /twice/],
  ['allow=A.com,a.com.', /twice/],
  ['allow=10.1.2.3/8,10.0.0.0/8', /twice/],
  ['allow=' + 'a'.repeat(64) + '.com', /longer than 63/],
  ['allow=' + Array(130).fill('abcdefghi').join('.') + '.com', /253/],
  ['allow=' + 'x'.repeat(20_000), /longer than/],
  [`allow=${Array.from({ length: MAX_EGRESS_RULES + 1 }, (_, i) => `h${i}.test`).join(',')}`, /at most/],
  ['allow=a.com;rm', /label/],
  ['allow=a.com;rm -rf /', /spaces/],
  ['allow=$(id).com', /label/],
  ['allow=a.com"', /label/],
];

describe('parseEgress refuses hostile and malformed input', () => {
  it.each(HOSTILE)('%j', (text, why) => {
    let err: unknown;
    try {
      parseEgress(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(EgressRuleError);
    expect((err as Error).message).toMatch(why);
  });
});

describe('parseEgress accepts and canonicalises', () => {
  const OK: [string, string][] = [
    ['all', 'all'],
    ['none', 'none'],
    ['allow=registry.npmjs.org', 'allow=registry.npmjs.org'],
    ['allow=Registry.NPMJS.org.', 'allow=registry.npmjs.org'],
    ['allow=*.githubusercontent.com:443', 'allow=*.githubusercontent.com:443'],
    ['allow=10.1.2.3,10.1.2.3:22', 'allow=10.1.2.3,10.1.2.3:22'],
    ['allow=10.1.2.3/8', 'allow=10.0.0.0/8'],
    ['allow=0.0.0.0/0:443', 'allow=0.0.0.0/0:443'],
    ['allow=192.168.7.9/32', 'allow=192.168.7.9/32'],
    ['allow=localhost:65535', 'allow=localhost:65535'],
    ['allow=xn--bcher-kva.de', 'allow=xn--bcher-kva.de'],
    ['allow=a.com:1', 'allow=a.com:1'],
  ];
  it.each(OK)('%j -> %j', (text, canonical) => {
    const p = parseEgress(text);
    expect(formatEgress(p)).toBe(canonical);
    expect(parseEgress(formatEgress(p))).toEqual(p);
  });

  it('keeps the rule shape of the contract', () => {
    expect(parseEgress('allow=*.Example.com:443,10.9.8.7/16').rules).toEqual([
      { kind: 'wildcard', value: 'example.com', port: 443, text: '*.example.com:443' },
      { kind: 'cidr', value: '10.9.0.0/16', text: '10.9.0.0/16' },
    ]);
  });

  it('accepts exactly the maximum number of rules', () => {
    const text = `allow=${Array.from({ length: MAX_EGRESS_RULES }, (_, i) => `h${i}.test`).join(',')}`;
    expect(parseEgress(text).rules).toHaveLength(MAX_EGRESS_RULES);
  });
});

describe('ruleFor', () => {
  const p = parseEgress('allow=api.test,*.cdn.test:443,10.0.0.0/8:22,192.168.1.5');
  it.each([
    [{ host: 'api.test', port: 80 }, 'api.test'],
    [{ host: 'API.test.', port: 1 }, 'api.test'],
    [{ host: 'x.cdn.test', port: 443 }, '*.cdn.test:443'],
    [{ host: 'a.b.cdn.test', port: 443 }, '*.cdn.test:443'],
    [{ ip: '10.200.3.4', port: 22 }, '10.0.0.0/8:22'],
    [{ host: '10.200.3.4', port: 22 }, '10.0.0.0/8:22'],
    [{ ip: '192.168.1.5', port: 9 }, '192.168.1.5'],
  ])('%j is allowed by %s', (dest, text) => {
    expect(ruleFor(p, dest)?.text).toBe(text);
  });
  it.each([
    { host: 'cdn.test', port: 443 },
    { host: 'x.cdn.test', port: 80 },
    { host: 'evilcdn.test', port: 443 },
    { host: 'api.test.evil', port: 80 },
    { host: 'xapi.test', port: 80 },
    { ip: '10.0.0.1', port: 23 },
    { ip: '11.0.0.1', port: 22 },
    { ip: '192.168.1.6', port: 9 },
    { port: 80 },
  ])('%j is denied', (dest) => {
    expect(ruleFor(p, dest)).toBeUndefined();
  });
  it('a domain rule does not match an address alone, nor a name an IP rule', () => {
    const q = parseEgress('allow=api.test,1.2.3.4');
    expect(ruleFor(q, { ip: '1.2.3.5', port: 80 })).toBeUndefined();
    expect(ruleFor(q, { host: '1.2.3.4', port: 80 })?.text).toBe('1.2.3.4');
    expect(ruleFor(q, { host: 'other.test', ip: '1.2.3.4', port: 80 })?.text).toBe('1.2.3.4');
  });
  it('all allows everything, none nothing', () => {
    expect(ruleFor(parseEgress('all'), { host: 'x.test', port: 1 })).toBe(ALL_RULE);
    expect(ruleFor(parseEgress('none'), { ip: '10.0.2.2', port: 22 })).toBeUndefined();
  });
});
