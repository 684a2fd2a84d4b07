// bridge_dns (issue 5): bridged networking and DNS on real VMs where the root helper
// (bangerd-root) runs: the guest sits on banger's bridge inside the smoke namespace, answers on
// its own address, and resolves `<name>.vm` through the bridge's DNS. Without a helper the daemon
// has only user-mode networking, and the scenario is skipped with the reason the daemon gives.
import { afterAll, describe, expect, it } from 'vitest';
import type { DaemonStatusResult, Vm } from '../../generated/types.gen.ts';
import { banger, bangerJson, daemonLogRecords, inNetns, smokeEnv, uniqueName } from './harness.ts';

const made: string[] = [];
afterAll(async () => {
  for (const n of made) await banger(['vm', 'delete', n]);
});

describe('bridged networking on real VMs', () => {
  it('bridge_dns: vm run --network bridge gives a guest reachable at its address, and <name>.vm resolves on the host and in the guest', async (ctx) => {
    const status = await bangerJson<DaemonStatusResult>(['daemon', 'status']);
    if (!status.helper.reachable) {
      ctx.skip(
        `needs the root helper for bridge, taps and DNS; the daemon reports it ${status.helper.configured ? `unreachable: ${status.helper.error ?? '?'}` : 'not configured'}`,
      );
    }
    const name = uniqueName('brdg');
    made.push(name);
    const run = await bangerJson<{ vm: Vm }>(['vm', 'run', '-d', '--network', 'bridge', '--name', name]);
    expect(run.vm.network.mode).toBe('bridge');
    const ip = run.vm.network.guest_ip!;
    expect(ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const netns = smokeEnv().netns;

    // Host side (inside the namespace): the guest's sshd answers on its bridge address...
    const banner = await inNetns(
      netns,
      ['timeout', '10', 'bash', '-c', `exec 3<>/dev/tcp/${ip}/22 && head -c 7 <&3`],
      { timeoutMs: 20_000 },
    );
    expect(banner.stdout).toBe('SSH-2.0');
    // ...and banger's DNS on 127.0.0.1 answers <name>.vm with it.
    const hostDns = daemonLogRecords().find(
      (l) => l.msg === 'dns listening for .vm' && l.address === '127.0.0.1',
    );
    expect(hostDns, 'the daemon log says where its DNS listens').toBeDefined();
    const lookup = await inNetns(
      netns,
      [
        process.execPath,
        '-e',
        `const r = new (require('node:dns').promises.Resolver)(); r.setServers(['127.0.0.1:${String(hostDns!.port)}']); r.resolve4(process.argv[1]).then((a) => console.log(a.join(',')), (e) => { console.error(e.code); process.exit(1); });`,
        `${name}.vm`,
      ],
      { timeoutMs: 20_000 },
    );
    expect(lookup.stdout.trim(), lookup.stderr).toBe(ip);

    // Guest side: a default route through the bridge, and <name>.vm resolves through it too.
    const r = await banger([
      'vm',
      'exec',
      name,
      '--',
      'sh',
      '-c',
      `ip -4 route show default | grep -q . && echo route-ok; getent hosts ${name}.vm | cut -d' ' -f1`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`route-ok\n${ip}\n`);
  });
});
