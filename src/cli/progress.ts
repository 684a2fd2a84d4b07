// Live progress of a long operation (VM create, image build), polled from its status method and
// drawn on stderr so stdout stays clean: on a terminal, a redrawn list of steps with a spinner,
// ✓/✗ and times; elsewhere (logs, CI, pipes), one plain line per step transition.
// Ctrl-C while watching cancels the operation (when a cancel is given); a second Ctrl-C stops
// waiting at once.
import type { Operation, Step } from '../../generated/types.gen.ts';
import { EXIT_INTERRUPTED } from './exit-codes.ts';
import { formatDuration, formatElapsed, paint } from './format.ts';

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'] as const;
const SPINNER_FRAME_MS = 80;

function ms(iso: string | undefined): number | undefined {
  if (iso === undefined) return undefined;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? undefined : t;
}

/** How long the operation has run: to its end, or to now while it runs. */
export function operationElapsed(op: Operation, now: number): number {
  const start = ms(op.started_at) ?? now;
  const end = ms(op.ended_at) ?? now;
  return Math.max(0, end - start);
}

/** How long a step ran (done/failed), or has run so far (running); undefined when it never ran. */
export function stepElapsed(step: Step, now: number): number | undefined {
  if (step.duration_ms !== undefined) return step.duration_ms;
  if (step.state === 'running') {
    const s = ms(step.started_at);
    return s === undefined ? undefined : Math.max(0, now - s);
  }
  return undefined;
}

export interface RenderOptions {
  /** The header, e.g. `Creating calm-otter`. */
  title?: string;
  /** ANSI colours. */
  color?: boolean;
  /** Terminal width: lines are cut to fit so a redraw can count them. */
  width?: number;
}

function cut(s: string, room: number): string {
  if (room <= 1) return '';
  const chars = [...s];
  return chars.length <= room ? s : `${chars.slice(0, room - 1).join('')}…`;
}

/**
 * The terminal view of an operation at time `now`: a header line, then one line per step —
 * `✓ prepare_disk   12 ms`, `⠹ boot   1.2 s  detail`, `✗ boot  1.2 s  detail`. Pure: the spinner
 * frame too is derived from `now`.
 */
export function renderSteps(op: Operation, now: number, opts: RenderOptions = {}): string[] {
  const color = opts.color ?? false;
  const width = opts.width ?? 100;
  const nameW = Math.max(0, ...op.steps.map((s) => [...s.name].length));
  const stateWord =
    op.state === 'running'
      ? ''
      : op.state === 'succeeded'
        ? ' done'
        : op.state === 'failed'
          ? ' failed'
          : ' canceled';
  const header =
    `${opts.title ?? op.kind}${stateWord}  ${formatDuration(operationElapsed(op, now))}`.trimStart();
  // The op id goes when the terminal is too narrow for it: a wrapped line would spoil the redraw.
  const lines = [
    [...header].length + 2 + op.id.length < width
      ? `${header}  ${paint(color, 'dim', op.id)}`
      : cut(header, width - 1),
  ];
  const frame = SPINNER[Math.floor(now / SPINNER_FRAME_MS) % SPINNER.length]!;
  for (const step of op.steps) {
    let mark: string;
    let style: 'green' | 'red' | 'yellow' | 'dim' | 'cyan';
    switch (step.state) {
      case 'done':
        mark = '✓';
        style = 'green';
        break;
      case 'failed':
        mark = '✗';
        style = 'red';
        break;
      case 'running':
        mark = op.state === 'running' ? frame : '•';
        style = 'cyan';
        break;
      case 'undone':
        mark = '↺';
        style = 'yellow';
        break;
      case 'skipped':
        mark = '-';
        style = 'dim';
        break;
      default:
        mark = '·';
        style = 'dim';
    }
    const took = stepElapsed(step, now);
    const time = (took === undefined ? '' : formatDuration(took)).padStart(8);
    const note = step.state === 'undone' || step.state === 'skipped' ? step.state : (step.detail ?? '');
    const plain = `  ${mark} ${step.name.padEnd(nameW)}  ${time}`;
    const room = width - 1 - [...plain].length - 2;
    const detail = note ? `  ${cut(note.replaceAll(/\s+/g, ' '), room)}` : '';
    const body = `${step.name.padEnd(nameW)}  ${time}`.trimEnd();
    lines.push(
      `  ${paint(color, style, mark)} ${step.state === 'pending' ? paint(color, 'dim', body) : body}${
        detail && step.state === 'failed' ? paint(color, 'red', detail) : paint(color, 'dim', detail)
      }`,
    );
  }
  return lines;
}

/** One plain line: `[  1.2s] prepare_disk done (12 ms)`. */
function plainLine(elapsedMs: number, text: string): string {
  return `[${formatElapsed(elapsedMs)}] ${text}`;
}

/**
 * Plain progress for logs and pipes: feed it each polled operation; it returns the lines for what
 * changed since the last one (steps started, finished, failed, undone; the end of the operation).
 * Detail updates of a running step are reported at most every `detailEveryMs`.
 */
export class PlainProgress {
  private readonly seen = new Map<string, { state: Step['state']; detail: string | undefined }>();
  private readonly detailAt = new Map<string, number>();
  private ended = false;
  private readonly detailEveryMs: number;

  constructor(opts: { detailEveryMs?: number } = {}) {
    this.detailEveryMs = opts.detailEveryMs ?? 5000;
  }

  update(op: Operation, now: number): string[] {
    const out: string[] = [];
    const opStart = ms(op.started_at) ?? now;
    const at = (step: Step, end: boolean): number => {
      const s = ms(step.started_at);
      if (s === undefined) return now - opStart;
      return Math.min(now, s + (end ? (step.duration_ms ?? 0) : 0)) - opStart;
    };
    const took = (step: Step): string =>
      step.duration_ms !== undefined ? ` (${formatDuration(step.duration_ms)})` : '';
    // Keyed by position: a step name can come back (a warm start that fell back to a cold boot
    // prepares the disk again), and steps are only ever appended.
    for (const [i, step] of op.steps.entries()) {
      const key = `${i}:${step.name}`;
      const prev = this.seen.get(key);
      let printed = prev?.detail;
      if (step.state !== (prev?.state ?? 'pending')) {
        switch (step.state) {
          case 'running':
            out.push(
              plainLine(at(step, false), `${step.name} started${step.detail ? `: ${step.detail}` : ''}`),
            );
            printed = step.detail;
            this.detailAt.set(key, now);
            break;
          case 'done':
            out.push(plainLine(at(step, true), `${step.name} done${took(step)}`));
            break;
          case 'failed':
            out.push(
              plainLine(
                at(step, true),
                `${step.name} failed${took(step)}${step.detail ? `: ${step.detail}` : ''}`,
              ),
            );
            break;
          case 'undone':
            out.push(plainLine(now - opStart, `${step.name} undone`));
            break;
          case 'skipped':
            out.push(
              plainLine(at(step, true), `${step.name} skipped${step.detail ? `: ${step.detail}` : ''}`),
            );
            break;
          case 'pending':
            break;
        }
      } else if (
        step.state === 'running' &&
        step.detail !== undefined &&
        step.detail !== printed &&
        now - (this.detailAt.get(key) ?? -Infinity) >= this.detailEveryMs
      ) {
        out.push(plainLine(now - opStart, `${step.name}: ${step.detail}`));
        printed = step.detail;
        this.detailAt.set(key, now);
      }
      this.seen.set(key, { state: step.state, detail: printed });
    }
    if (op.state !== 'running' && !this.ended) {
      this.ended = true;
      const elapsed = operationElapsed(op, now);
      if (op.state === 'succeeded') out.push(plainLine(elapsed, 'succeeded'));
      else if (op.state === 'canceled') out.push(plainLine(elapsed, 'canceled'));
      else out.push(plainLine(elapsed, `failed${op.error ? `: ${op.error.message}` : ''}`));
    }
    return out;
  }
}

/** The stream progress is drawn on (process.stderr, or a fake in tests). */
export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface WatchOptions {
  /** Header for the progress, e.g. `Creating calm-otter`. */
  title: string;
  /** Called on the first Ctrl-C; the watch then goes on until the operation ends (canceled). */
  cancel?: () => Promise<unknown>;
  /**
   * Another way to interrupt, as a first Ctrl-C does (cancel, then wait for the end): e.g. the
   * caller's SIGTERM. Aborted already means at once.
   */
  abort?: AbortSignal;
  /** Poll interval (default 50 ms: a cheap local RPC, and a warm create is done in about a second). */
  intervalMs?: number;
  stream?: ProgressStream;
  /** `tty`: redraw in place; `plain`: a line per transition; `none`: silent. Default: from the stream. */
  mode?: 'tty' | 'plain' | 'none';
  color?: boolean;
}

export interface Watched<T> {
  /** The last status, with a finished operation. */
  last: T;
  /** Ctrl-C was pressed while watching. */
  interrupted: boolean;
  /** Cancel was asked for but refused (e.g. the operation had already finished). */
  cancelError?: unknown;
}

/**
 * Poll until the operation is no longer running, drawing its progress. Resolves with the last
 * status. Poll errors are thrown; a cancel that fails with anything but `conflict` is thrown too.
 */
export async function watchOperation<T extends { operation: Operation }>(
  poll: () => Promise<T>,
  opts: WatchOptions,
): Promise<Watched<T>> {
  const stream: ProgressStream = opts.stream ?? process.stderr;
  const mode = opts.mode ?? (stream.isTTY ? 'tty' : 'plain');
  const color = opts.color ?? false;
  const interval = opts.intervalMs ?? 50;
  const plain = new PlainProgress();

  let interrupted = false;
  let cancelError: unknown;
  let cancelDone: Promise<void> | undefined;
  let wake: (() => void) | undefined;
  let last: T | undefined;
  let drawnLines = 0;
  let ticker: ReturnType<typeof setInterval> | undefined;
  let notice: string | undefined;

  const draw = (now: number): void => {
    if (mode !== 'tty' || !last) return;
    const lines = renderSteps(last.operation, now, {
      title: opts.title,
      color,
      width: stream.columns ?? 100,
    });
    if (notice) lines.push(`  ${paint(color, 'yellow', notice)}`);
    stream.write(`${drawnLines > 0 ? `\x1b[${drawnLines}F\x1b[J` : ''}${lines.join('\n')}\n`);
    drawnLines = lines.length;
  };
  const showCursor = (): void => {
    if (mode === 'tty') stream.write('\x1b[?25h');
  };
  const onExit = (): void => showCursor();
  const interrupt = (): void => {
    interrupted = true;
    if (opts.cancel) {
      notice = 'canceling… (Ctrl-C again to stop waiting)';
      if (mode === 'plain')
        stream.write(`canceling ${last?.operation.id ?? ''} (Ctrl-C again to stop waiting)\n`);
      cancelDone = opts.cancel().then(
        () => undefined,
        (err: unknown) => {
          cancelError = err;
        },
      );
    }
    draw(Date.now());
    wake?.();
  };

  const onSigint = (): void => {
    if (interrupted) {
      showCursor();
      stream.write('\nstopped waiting; the operation may still be running\n');
      process.exit(EXIT_INTERRUPTED);
    }
    interrupt();
  };
  const onAbort = (): void => {
    if (!interrupted) interrupt();
  };
  process.on('SIGINT', onSigint);
  process.on('exit', onExit);
  if (opts.abort?.aborted) onAbort();
  else opts.abort?.addEventListener('abort', onAbort);
  if (mode === 'tty') {
    stream.write('\x1b[?25l');
    ticker = setInterval(() => draw(Date.now()), 100);
  } else if (mode === 'plain') {
    stream.write(`${opts.title}\n`);
  }
  try {
    for (;;) {
      last = await poll();
      const now = Date.now();
      if (mode === 'plain') for (const l of plain.update(last.operation, now)) stream.write(`${l}\n`);
      draw(now);
      if (last.operation.state !== 'running') break;
      // Without a cancel, Ctrl-C just stops watching.
      if (interrupted && !opts.cancel) break;
      if (cancelDone) {
        await cancelDone;
        cancelDone = undefined;
        if (cancelError !== undefined && !isConflict(cancelError)) throw cancelError;
        continue; // poll at once: the cancel usually ends the operation
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, interval);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    if (ticker) clearInterval(ticker);
    process.off('SIGINT', onSigint);
    process.off('exit', onExit);
    opts.abort?.removeEventListener('abort', onAbort);
    showCursor();
  }
  const out: Watched<T> = { last, interrupted };
  if (cancelError !== undefined) out.cancelError = cancelError;
  return out;
}

function isConflict(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'conflict';
}

/** The step that failed (the last one marked failed), for a failure summary. */
export function failedStep(op: Operation): Step | undefined {
  return op.steps.findLast((s) => s.state === 'failed');
}

/**
 * Where to look after a failed create. A failed create undoes its steps, the VM's record and
 * console log included, so `vm logs NAME` would answer not found: the daemon keeps that boot's
 * console with its log lines under the create's op id instead. Only a VM whose record survived
 * (status still returns it) has a console of its own to read.
 */
export function failedCreateHint(bin: string, opId: string, vmKept: string | undefined): string {
  return vmKept
    ? `  the VM's console log: ${bin} vm logs ${vmKept}; everything under this create: ${bin} op trace ${opId}`
    : `  the create was undone; its boot console and log lines: ${bin} op trace ${opId}`;
}
