import type { ErrorObject } from 'ajv';

/** Turn ajv's errors into one line that names the part that failed. */
export function describeAjvErrors(errors: ErrorObject[] | null | undefined): string {
  if (!errors || errors.length === 0) return 'invalid';
  return errors
    .slice(0, 5)
    .map((e) => {
      const where = e.instancePath === '' ? 'params' : `params${e.instancePath.replaceAll('/', '.')}`;
      if (e.keyword === 'additionalProperties') {
        return `${where}: unknown field "${String((e.params as { additionalProperty?: string }).additionalProperty)}"`;
      }
      if (e.keyword === 'required') {
        return `${where}: missing field "${String((e.params as { missingProperty?: string }).missingProperty)}"`;
      }
      return `${where} ${e.message ?? 'is invalid'}`;
    })
    .join('; ');
}
