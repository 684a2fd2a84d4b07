// The declared-codes contract: a method may answer only with the error codes its schema record
// lists, plus the universal ones. The dispatcher maps a handler's failure here (the same
// toErrorResponse the server would apply) and checks the code against the generated table.
//
// A breach is always logged at error level ("undeclared error code", with method, code and the
// op id the logger adds); the response is left as it is, since the client must see the real
// error. With BANGER_CHECK_ERROR_CODES=1 (set for every vitest run and the smoke daemons) it is
// also recorded, and the test suites' setup (test/helpers/error-codes-setup.ts) fails the test
// during which it happened: a test need not look at the code to catch the breach.
import { UNIVERSAL_ERROR_CODES, type ErrorCode } from '../../generated/errors.gen.ts';
import type { RpcContext } from './context.ts';
import { isStreamResponse, type HandlerResponse, type RequestEnvelope } from './envelope.ts';
import { toErrorResponse, type ErrorResponse } from './errors.ts';

export const CHECK_ENV = 'BANGER_CHECK_ERROR_CODES';

export interface UndeclaredCode {
  method: string;
  code: ErrorCode;
  opId: string;
  message: string;
}

const recorded: UndeclaredCode[] = [];

/** Check mode: record breaches for the test suites (env BANGER_CHECK_ERROR_CODES=1). */
export function checkingErrorCodes(): boolean {
  return process.env[CHECK_ENV] === '1';
}

/** The breaches recorded in check mode since the last call, and forget them. */
export function takeUndeclaredCodes(): UndeclaredCode[] {
  return recorded.splice(0);
}

/** Throw, listing them, if breaches were recorded since the last call (the suites' afterEach). */
export function assertNoUndeclaredCodes(): void {
  const breaches = takeUndeclaredCodes();
  if (breaches.length === 0) return;
  const list = breaches.map((b) => `${b.method} answered ${b.code} (${b.opId}): ${b.message}`);
  throw new Error(
    `undeclared error code: the method's "errors" in schema/methods.json do not list it\n  ${list.join('\n  ')}`,
  );
}

export type DeclaredErrors = Readonly<Record<string, readonly ErrorCode[]>>;

/** May `method` answer with `code`? Unknown methods may answer only with universal codes. */
export function isDeclared(declared: DeclaredErrors, method: string, code: ErrorCode): boolean {
  if (UNIVERSAL_ERROR_CODES.includes(code)) return true;
  return Object.hasOwn(declared, method) && (declared[method] as readonly ErrorCode[]).includes(code);
}

function checked(declared: DeclaredErrors, ctx: RpcContext, method: string, err: unknown): ErrorResponse {
  const e = toErrorResponse(err, ctx.opId);
  if (!isDeclared(declared, method, e.code)) {
    ctx.log.error({ method, code: e.code, op_id: ctx.opId, error: e.bareMessage }, 'undeclared error code');
    if (checkingErrorCodes()) recorded.push({ method, code: e.code, opId: ctx.opId, message: e.bareMessage });
  }
  return e;
}

async function* checkedStream(
  stream: AsyncIterable<unknown>,
  check: (err: unknown) => ErrorResponse,
): AsyncGenerator<unknown> {
  try {
    yield* stream;
  } catch (err) {
    throw check(err);
  }
}

/** Run one dispatch, checking the code of its failure (thrown, or raised by its stream). */
export async function dispatchChecked(
  declared: DeclaredErrors,
  ctx: RpcContext,
  req: RequestEnvelope,
  run: () => Promise<HandlerResponse>,
): Promise<HandlerResponse> {
  const check = (err: unknown): ErrorResponse => checked(declared, ctx, req.method, err);
  let res: HandlerResponse;
  try {
    res = await run();
  } catch (err) {
    throw check(err);
  }
  if (!isStreamResponse(res)) return res;
  return { stream: checkedStream(res.stream, check), final: res.final };
}
