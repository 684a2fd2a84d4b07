// The wire envelopes of protocol v1 (see docs/protocol.md). Field names are snake_case like the wire.
import type { ErrorCode } from '../../generated/errors.gen.ts';

export interface RequestEnvelope {
  version: number;
  method: string;
  params?: unknown;
  op_id?: string;
}

export interface WireError {
  code: ErrorCode;
  message: string;
  op_id?: string;
  data?: unknown;
}

export interface OkResponse {
  ok: true;
  result: unknown;
  op_id?: string;
}

export interface ErrResponse {
  ok: false;
  error: WireError;
}

/** One non-final frame of a streaming method; the stream ends with an OkResponse marked final. */
export interface StreamFrame {
  ok: true;
  frame: unknown;
  op_id?: string;
}

export interface FinalResponse extends OkResponse {
  final: true;
}

export type ResponseEnvelope = OkResponse | ErrResponse;

/**
 * What a handler returns: a single response, or a stream of frames followed by a final result.
 * Handlers return values; they never touch the connection.
 */
export type HandlerResponse = ResponseEnvelope | { stream: AsyncIterable<unknown>; final: () => unknown };

export function isStreamResponse(
  r: HandlerResponse,
): r is { stream: AsyncIterable<unknown>; final: () => unknown } {
  return typeof r === 'object' && r !== null && 'stream' in r;
}

export const MAX_REQUEST_BYTES = 1024 * 1024;
export const OP_ID_PATTERN = /^op-[0-9a-f]{6,32}$/;
