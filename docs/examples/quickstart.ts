// Quick start: talk to the daemon on the CLI's socket ($BANGER_SOCKET, then the default path).
// Run: node quickstart.ts (Node 24 runs TypeScript directly). The SDK test runs this very file.
import { BangerClient, isMethodError, type VmShowErrorCode } from 'banger/client';

const client = new BangerClient();

const pong = await client.ping();
console.log(`ping: pong=${pong.pong} version=${pong.version}`);

const status = await client.daemon.status();
console.log(`daemon: protocol ${status.protocol_version}, pid ${status.pid}, socket ${status.socket}`);

try {
  const { vm } = await client.vm.show({ name: 'no-such-vm' });
  console.log(`${vm.name} is ${vm.state}`);
} catch (err) {
  // isMethodError narrows err.code to what vm.show may reject with: its declared codes, the
  // universal ones and `canceled`. A code outside that set is not narrowed (and is a daemon bug).
  if (!isMethodError(err, 'vm.show')) throw err;
  const code: VmShowErrorCode = err.code;
  if (code !== 'not_found') throw err;
  // Every wire error carries the op id of the call: `banger op trace <op id>` shows its logs.
  console.log(`vm.show: ${code}: ${err.bareMessage} (${err.opId})`);
}
