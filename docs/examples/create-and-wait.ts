// Create a VM and wait for it, printing each step as the daemon reports it; cancel on Ctrl-C.
import { BangerClient, ErrorResponse } from 'banger/client';

const client = new BangerClient({ socket: process.env.BANGER_SOCKET });
const abort = new AbortController();
process.once('SIGINT', () => abort.abort());

// The operation id is the op id of the begin call itself.
const begun = await client.vm.create.begin({ name: 'sdk-demo', vcpus: 2, memory_mib: 1024 });
console.log(`creating ${begun.name} (${begun.operation_id})`);

let lastStep: string | undefined;
try {
  const done = await client.vm.create.wait(begun.operation_id, {
    signal: abort.signal,
    onProgress: ({ operation }) => {
      if (operation.current_step !== lastStep) console.log(`  step: ${(lastStep = operation.current_step)}`);
    },
  });
  console.log(`${done.vm?.name} is ${done.vm?.state}`);
} catch (err) {
  if (err instanceof ErrorResponse && err.code === 'canceled' && abort.signal.aborted) {
    // Stopping the wait leaves the create running: cancel it too.
    await client.vm.create.cancel({ operation_id: begun.operation_id });
    console.log('canceled');
  } else throw err;
}

// Any operation id works with the generic waiter too (it learns the kind from op.show).
const again = await client.operations.wait(begun.operation_id);
console.log(`${again.operation.kind}: ${again.operation.state}`);
