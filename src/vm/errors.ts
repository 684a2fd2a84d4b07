// The VM layer's own error (containerd's errdefs): what went wrong, by kind, in the layer's words.
// The daemon turns it into a wire error in one place (src/rpc/error-map.ts: VmError's kinds →
// wire codes); nothing in src/vm builds wire errors itself.

export type VmErrorKind =
  /** The input is wrong (a name, a size, a path, a mode this daemon cannot give). */
  | 'invalid'
  /** The named VM, image or workspace does not exist. */
  | 'not_found'
  /** A name is taken. */
  | 'exists'
  /** The VM must be running for this. */
  | 'not_running'
  /** The VM is busy with another verb, or in a state that does not allow this one. */
  | 'conflict'
  /** The caller canceled (a create cancel, a closed connection). */
  | 'canceled'
  /** The work itself failed (a boot, a guest command, SSH). */
  | 'failed';

export class VmError extends Error {
  readonly code: VmErrorKind;
  constructor(code: VmErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VmError';
    this.code = code;
  }
}

/** `<what> not found`, as every not-found of this layer says it. */
export function vmNotFound(what: string): VmError {
  return new VmError('not_found', `${what} not found`);
}
