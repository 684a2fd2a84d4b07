// Identifiers derived from a method name, in one place so every emitter agrees:
// 'daemon.operations.list' → DaemonOperationsList (types), operationsList (service method),
// DaemonService (namespace interface), daemonOperationsList (special-handler key).

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
  /** The service interface of the namespace, e.g. DaemonService. */
  serviceInterface: string | undefined;
  /** camelCase of the segments after the namespace, e.g. operationsList. */
  serviceMethod: string | undefined;
  /** camelCase of all segments: the SpecialHandlers key and the handler function's stem. */
  specialKey: string;
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
    serviceInterface: namespace === undefined ? undefined : `${pascalSegment(namespace)}Service`,
    serviceMethod: namespace === undefined ? undefined : camel(segments.slice(1)),
    specialKey: camel(segments),
  };
}

/** The interface name of a client namespace object: ['daemon', 'operations'] → DaemonOperationsApi. */
export function apiInterfaceName(path: readonly string[]): string {
  return `${pascal(path)}Api`;
}
