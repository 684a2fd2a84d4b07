// The engine logs through whatever pino-compatible logger the caller hands in; by default it is
// silent, so library use and unit tests stay quiet.
import type { Logger } from 'pino';

export type EngineLogger = Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;

const noop = (): void => {};

export const silentLogger: EngineLogger = { info: noop, warn: noop, error: noop, debug: noop };
