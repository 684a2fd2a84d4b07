// The VM state machine as data: which state may follow which. The lifecycle owner
// (src/vm/lifecycle.ts) is the only writer of a VM's state and refuses any change this table does
// not list; test/unit/vm-states.test.ts walks every pair. docs/lifecycle.md draws it.
import { VM_STATES, type VmState } from '../store/index.ts';

export { VM_STATES, type VmState };

/**
 * from → the states it may move to. A VM is born `creating` (the record step) and leaves the
 * table by being deleted from `creating` (an undone create) or `deleting` (a finished delete).
 */
export const TRANSITIONS: Readonly<Record<VmState, readonly VmState[]>> = {
  // create: ready (running), made without starting (stopped), or kept as error when an
  // interrupted create cannot be undone.
  creating: ['running', 'stopped', 'error'],
  // start: ready, failed (the VMM is gone: stopped, or error with the reason), or interrupted
  // (a daemon restart kills the half-booted VMM: stopped); a stop or kill of a booting VM.
  starting: ['running', 'stopped', 'error', 'stopping'],
  // stop (or a delete, which stops first); kill, or the VMM exited on its own (stopped, with
  // last_exit); QEMU stopped the guest (paused, e.g. a host I/O error); `vm pause` (pausing).
  running: ['stopping', 'stopped', 'paused', 'pausing', 'error'],
  // `vm pause` saves the VM to disk: paused (saved, the VMM gone), running (the save failed and
  // the guest was continued), stopped (the VMM died meanwhile), error.
  pausing: ['paused', 'running', 'stopped', 'error'],
  // In memory (the VMM runs, QEMU stopped the guest): resumed (by hand or once the host disk
  // has room again), stopped, killed. Saved to disk (no VMM, saved_state set): resuming, or
  // stopped (`vm stop` discards the saved state; `vm delete` stops first).
  paused: ['running', 'resuming', 'stopping', 'stopped', 'error'],
  // `vm resume` of a VM saved to disk: running, paused (failed before the saved state was used:
  // it is kept), error or stopped (failed after: the saved state is gone).
  resuming: ['running', 'paused', 'stopped', 'error'],
  stopping: ['stopped', 'error'],
  stopped: ['starting', 'deleting'],
  error: ['starting', 'stopped', 'deleting'],
  // A delete that fails half-way stays `deleting` and is finished by the next delete or restart.
  deleting: [],
};

/**
 * The states a VM's VMM may be running in (a VM `paused` to disk has none, one paused in memory
 * has one: both are listed).
 */
export const LIVE_STATES: readonly VmState[] = [
  'starting',
  'running',
  'pausing',
  'paused',
  'resuming',
  'stopping',
];

export function canTransition(from: VmState, to: VmState): boolean {
  return TRANSITIONS[from].includes(to);
}

/** A refused transition: a bug in the caller (the lifecycle checks busy/state before acting). */
export class TransitionError extends Error {
  readonly from: VmState;
  readonly to: VmState;
  constructor(vm: string, from: VmState, to: VmState) {
    super(`vm "${vm}": no transition from ${from} to ${to}`);
    this.name = 'TransitionError';
    this.from = from;
    this.to = to;
  }
}
