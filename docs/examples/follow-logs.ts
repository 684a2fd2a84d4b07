// Follow a VM's serial console as an async iterator; leaving the loop ends the stream.
import { BangerClient } from 'banger/client';

const name = process.argv[2] ?? 'sdk-demo';
const client = new BangerClient();
const stream = client.vm.logsStream({ name, follow: true }, { signal: AbortSignal.timeout(60_000) });
for await (const frame of stream) {
  process.stdout.write(frame.data);
  if (frame.data.includes('login:')) break; // stops the call: the daemon ends the stream
}
