// NftNat against a scripted `nft`: the JSON batches it writes, idempotency, and parsing what
// `nft -j list table` prints.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  fileForwarding,
  NftNat,
  parseNatRules,
  vmRuleCommands,
  type Runner,
} from '../../src/hostnet/index.ts';

const VM = '0123456789ab';

/** A tiny nftables: keeps rules from the batches it is fed, answers list commands in nft -j shape. */
function fakeNft(): { runner: Runner; batches: unknown[]; rules: Map<number, Record<string, unknown>> } {
  const batches: unknown[] = [];
  const rules = new Map<number, Record<string, unknown>>();
  let table = false;
  let handle = 1;
  const runner: Runner = async (file, args) => {
    expect(file).toBe('/usr/sbin/nft');
    const a = args.join(' ');
    if (a === '-j list tables')
      return JSON.stringify({
        nftables: table ? [{ table: { family: 'ip', name: 'banger', handle: 1 } }] : [],
      });
    if (a === '-j list table ip banger') {
      if (!table) throw new Error('Error: No such file or directory');
      return JSON.stringify({
        nftables: [...rules.entries()].map(([h, r]) => ({ rule: { ...r, handle: h } })),
      });
    }
    if (args.length === 2 && args[0] === '-j' && args[1]!.startsWith('{')) {
      const batch = JSON.parse(args[1]!) as {
        nftables: Record<string, Record<string, Record<string, unknown>>>[];
      };
      batches.push(batch);
      for (const cmd of batch.nftables) {
        if (cmd.add?.table) table = true;
        if (cmd.add?.rule) rules.set(handle++, cmd.add.rule);
        if (cmd.delete?.rule) rules.delete(cmd.delete.rule.handle as number);
        if (cmd.delete?.table) {
          table = false;
          rules.clear();
        }
      }
      return '';
    }
    throw new Error(`unexpected nft ${a}`);
  };
  return { runner, batches, rules };
}

function forwardFile(v: string): string {
  const f = join(mkdtempSync(join(tmpdir(), 'bnat-')), 'ip_forward');
  writeFileSync(f, v);
  return f;
}

describe('NftNat', () => {
  it('writes the table, chains and the three VM rules once; a second ensure changes nothing', async () => {
    const nft = fakeNft();
    const fwd = forwardFile('0\n');
    const nat = new NftNat({ runner: nft.runner, forwarding: fileForwarding(fwd) });
    expect(await nat.ensure(VM, '10.213.0.2', 'br-banger')).toEqual({ created: true, rules: 3 });
    expect(readFileSync(fwd, 'utf8').trim()).toBe('1');
    expect(nft.rules.size).toBe(3);
    expect(await nat.ensure(VM, '10.213.0.2', 'br-banger')).toEqual({ created: false, rules: 3 });
    expect(nft.batches).toHaveLength(1);
    const listed = await nat.list();
    expect(listed.map((r) => [r.chain, r.guestIp, r.bridge])).toEqual([
      ['postrouting', '10.213.0.2', 'br-banger'],
      ['forward', '10.213.0.2', 'br-banger'],
      ['forward', '10.213.0.2', 'br-banger'],
    ]);
  });

  it('replaces stale rules of the VM in one batch when its address changed', async () => {
    const nft = fakeNft();
    const nat = new NftNat({ runner: nft.runner, forwarding: fileForwarding(forwardFile('1')) });
    await nat.ensure(VM, '10.213.0.2', 'br-banger');
    await nat.ensure(VM, '10.213.0.9', 'br-banger');
    expect(nft.batches).toHaveLength(2);
    const second = nft.batches[1] as { nftables: Record<string, unknown>[] };
    expect(second.nftables.filter((c) => 'delete' in c)).toHaveLength(3);
    expect([...nft.rules.values()].every((r) => JSON.stringify(r).includes('10.213.0.9'))).toBe(true);
  });

  it('removes only the VM’s rules, and is fine when there are none', async () => {
    const nft = fakeNft();
    const nat = new NftNat({ runner: nft.runner, forwarding: fileForwarding(forwardFile('1')) });
    expect(await nat.remove(VM)).toEqual({ removed: 0 });
    await nat.ensure(VM, '10.213.0.2', 'br-banger');
    await nat.ensure('ba9876543210', '10.213.0.3', 'br-banger');
    expect(await nat.remove(VM)).toEqual({ removed: 3 });
    expect((await nat.list()).map((r) => r.vmId)).toEqual(['ba9876543210', 'ba9876543210', 'ba9876543210']);
    expect(await nat.purge()).toEqual({ deleted: true });
    expect(await nat.list()).toEqual([]);
  });

  it('refuses values outside the vocabulary before running anything', async () => {
    const nft = fakeNft();
    const nat = new NftNat({ runner: nft.runner, forwarding: fileForwarding(forwardFile('1')) });
    await expect(nat.ensure('nope', '10.213.0.2', 'br-banger')).rejects.toThrow(/refusing/);
    await expect(nat.ensure(VM, '10.213.0.2', 'eth0')).rejects.toThrow(/refusing/);
    await expect(nat.ensure(VM, '10.213.0.2; flush ruleset', 'br-banger')).rejects.toThrow(/refusing/);
    expect(nft.batches).toHaveLength(0);
  });
});

describe('nft JSON', () => {
  it('vmRuleCommands: one masquerade scoped to the guest, two forward accepts, all commented', () => {
    const cmds = vmRuleCommands(VM, '10.213.0.2', 'br-banger');
    expect(cmds).toHaveLength(3);
    const text = JSON.stringify(cmds);
    expect(text.match(/"masquerade"/g)).toHaveLength(1);
    expect(text.match(/"comment":"banger vm 0123456789ab"/g)).toHaveLength(3);
    expect(cmds[0]).toEqual({
      add: {
        rule: {
          family: 'ip',
          table: 'banger',
          chain: 'postrouting',
          comment: 'banger vm 0123456789ab',
          expr: [
            {
              match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: '10.213.0.2' },
            },
            { match: { op: '!=', left: { meta: { key: 'oifname' } }, right: 'br-banger' } },
            { masquerade: null },
          ],
        },
      },
    });
  });

  it('parseNatRules keeps only banger-commented rules of banger’s table', () => {
    const rules = parseNatRules({
      nftables: [
        { metainfo: { version: '1.0.6' } },
        {
          rule: {
            family: 'ip',
            table: 'banger',
            chain: 'postrouting',
            handle: 3,
            comment: 'banger vm 0123456789ab',
            expr: [],
          },
        },
        {
          rule: {
            family: 'ip',
            table: 'banger',
            chain: 'postrouting',
            handle: 4,
            comment: 'someone else',
            expr: [],
          },
        },
        {
          rule: {
            family: 'ip',
            table: 'nat',
            chain: 'postrouting',
            handle: 5,
            comment: 'banger vm 0123456789ab',
          },
        },
        {
          rule: {
            family: 'ip',
            table: 'banger',
            chain: 'forward',
            handle: 'x',
            comment: 'banger vm 0123456789ab',
          },
        },
        { rule: { family: 'ip', table: 'banger', chain: 'forward', handle: 6, comment: 'banger vm ../etc' } },
      ],
    });
    expect(rules).toEqual([{ vmId: VM, chain: 'postrouting', handle: 3 }]);
    expect(() => parseNatRules([])).toThrow(/no "nftables" array/);
  });
});
