import type { OpService } from '../../../generated/handlers.gen.ts';
import type * as T from '../../../generated/types.gen.ts';
import { ErrorResponse } from '../../rpc/errors.ts';

export class OpServiceImpl implements OpService {
  async list(_p: T.OpListParams): Promise<T.OpListResult> {
    throw new ErrorResponse('operation_failed', 'op.list is not implemented yet');
  }
  async show(_p: T.OpShowParams): Promise<T.OpShowResult> {
    throw new ErrorResponse('operation_failed', 'op.show is not implemented yet');
  }
  async trace(_p: T.OpTraceParams): Promise<T.OpTraceResult> {
    throw new ErrorResponse('operation_failed', 'op.trace is not implemented yet');
  }
}
