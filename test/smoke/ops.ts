// Direct client calls for what the CLI has no verb for in a test (cancel by operation id).
import { BangerClient } from '../../generated/client.gen.ts';
import type { Operation } from '../../generated/types.gen.ts';
import { SocketTransport } from '../../src/rpc/transport.ts';
import { smokeEnv } from './harness.ts';

export function client(): BangerClient {
  return new BangerClient(new SocketTransport(smokeEnv().socket));
}

export async function runCancel(operationId: string): Promise<Operation> {
  return (await client().vm.create.cancel({ operation_id: operationId })).operation;
}
