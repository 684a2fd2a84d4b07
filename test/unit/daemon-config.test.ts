// The daemon config's network keys are accepted (they were parsed, but refused as unknown first).
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.ts';

describe('daemon config: bridge and DNS keys', () => {
  it('dns_port, bridge_name and bridge_cidr are read', () => {
    const c = parseConfig('dns_port = 0\nbridge_name = "br-banger2"\nbridge_cidr = "10.9.0.0/24"\n');
    expect(c).toMatchObject({ dns_port: 0, bridge_name: 'br-banger2', bridge_cidr: '10.9.0.0/24' });
  });
  it('bad values are still refused, and unknown keys too', () => {
    expect(() => parseConfig('dns_port = 70000\n')).toThrow(/dns_port must be/);
    expect(() => parseConfig('bridge_cidr = "10.9.0.1/24"\n')).toThrow(/bridge_cidr must be/);
    expect(() => parseConfig('dns_prot = 1\n')).toThrow(/unknown key "dns_prot"/);
  });
});
