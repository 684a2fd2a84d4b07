// secret.* : the values banger's egress proxy puts into VMs' requests (src/egress/secrets.ts).
// Nothing here logs a value or returns one; the RPC log and the op trace never see params
// (src/daemon/rpc-log.ts redactParams keeps it that way if they ever do).
import type { SecretService } from '../../../generated/handlers.gen.ts';
import type * as T from '../../../generated/types.gen.ts';
import { badRequest, ErrorResponse } from '../../rpc/errors.ts';
import type { Store } from '../../store/index.ts';
import { SecretError, type SecretStore } from '../../egress/secrets.ts';

export interface SecretServiceDeps {
  secrets: SecretStore;
  store: Store;
}

function wireError(err: unknown): unknown {
  if (err instanceof SecretError)
    return err.code === 'not_found' ? new ErrorResponse('not_found', err.message) : badRequest(err.message);
  return err;
}

export class SecretServiceImpl implements SecretService {
  private readonly d: SecretServiceDeps;

  constructor(deps: SecretServiceDeps) {
    this.d = deps;
  }

  async set(p: T.SecretSetParams): Promise<T.SecretSetResult> {
    try {
      const r = await this.d.secrets.set(p.name, p.value);
      return { name: p.name, created: r.created };
    } catch (err) {
      throw wireError(err);
    }
  }

  async list(): Promise<T.SecretListResult> {
    const vms = this.d.store.vms.list();
    const secrets = (await this.d.secrets.list()).map((s) => ({
      name: s.name,
      updated_at: s.updatedAt.toISOString(),
      used_by: vms.filter((v) => v.secrets.some((r) => r.name === s.name)).map((v) => v.name),
    }));
    return { secrets };
  }

  async rm(p: T.SecretRmParams): Promise<T.SecretRmResult> {
    try {
      await this.d.secrets.rm(p.name);
    } catch (err) {
      throw wireError(err);
    }
    return { name: p.name, deleted: true };
  }
}
