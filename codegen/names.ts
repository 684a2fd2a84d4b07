// Identifiers derived from a method name, in one place so every emitter agrees:
// 'daemon.operations.list' → DaemonOperationsList (types), services.daemon.operations.list (the
// service path and method), DaemonOperationsService (the interface that declares the method).

/** 'port_forward' → 'PortForward'. */
export function pascalSegment(segment: string): string {
  return segment
    .split('_')
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}

/** ['operations', 'list'] → 'OperationsList'. */
export function pascal(segments: readonly string[]): string {
  return segments.map(pascalSegment).join('');
}

/** ['operations', 'list'] → 'operationsList'. */
export function camel(segments: readonly string[]): string {
  const p = pascal(segments);
  return p.charAt(0).toLowerCase() + p.slice(1);
}

/** A property key as TypeScript source: bare when it is an identifier, quoted otherwise. */
export function propertyKey(key: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? key : `'${key}'`;
}

export interface MethodNames {
  segments: string[];
  /** The namespace (first segment); absent for bare names such as `ping`. */
  namespace: string | undefined;
  /** PascalCase of all segments: the stem of the Params/Result type names. */
  typeBase: string;
  paramsType: string;
  resultType: string;
  /** The type of one frame of a stream method. */
  frameType: string;
  /** The segments before the last: where the method lives under `services` ([] at the root). */
  servicePath: string[];
  /**
   * The interface that declares the method, e.g. DaemonOperationsService; absent for a bare name
   * such as `ping`, which is a method of the surface's Services itself.
   */
  serviceInterface: string | undefined;
  /** camelCase of the last segment, e.g. list (priv.create_tap → createTap). */
  serviceMethod: string;
}

export function methodNames(name: string): MethodNames {
  const segments = name.split('.');
  const namespace = segments.length > 1 ? segments[0] : undefined;
  const typeBase = pascal(segments);
  return {
    segments,
    namespace,
    typeBase,
    paramsType: `${typeBase}Params`,
    resultType: `${typeBase}Result`,
    frameType: `${typeBase}Frame`,
    servicePath: segments.slice(0, -1),
    serviceInterface: serviceInterfaceName(segments.slice(0, -1)),
    serviceMethod: camel(segments.slice(-1)),
  };
}

/** The service interface of a path under `services`: ['vm', 'create'] → VmCreateService. */
export function serviceInterfaceName(path: readonly string[]): string | undefined {
  return path.length === 0 ? undefined : `${pascal(path)}Service`;
}

/** The interface name of a client namespace object: ['daemon', 'operations'] → DaemonOperationsApi. */
export function apiInterfaceName(path: readonly string[]): string {
  return `${pascal(path)}Api`;
}
