// The guest A/B part's variants file: a JSON array of guests to boot bare, the first being the
// reference. Image paths are relative to the file.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export interface VariantSpec {
  label: string;
  /** An image directory (vmlinuz, initrd.cpio.gz, rootfs.ext4); default: the daemon's default image. */
  image?: string;
  /** Kernel command line, NAME standing for the VM name; default: banger's. */
  cmdline?: string;
  /** Appended to the QEMU command line. */
  qemu_args?: string[];
}

export function parseVariants(text: string, file: string): VariantSpec[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`--variants ${file}: not JSON (${(err as Error).message})`, { cause: err });
  }
  const bad = (why: string): Error => new Error(`--variants ${file}: ${why}`);
  if (!Array.isArray(raw) || raw.length < 2) throw bad('want a JSON array of at least two variants');
  const specs = raw.map((v: unknown, i) => {
    if (typeof v !== 'object' || v === null) throw bad(`entry ${i} is not an object`);
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o))
      if (!['label', 'image', 'cmdline', 'qemu_args'].includes(k)) throw bad(`entry ${i}: unknown key ${k}`);
    if (typeof o.label !== 'string' || !/^[A-Za-z0-9._-]{1,40}$/.test(o.label))
      throw bad(`entry ${i}: label must be 1-40 letters, digits, dot, dash, underscore`);
    const spec: VariantSpec = { label: o.label };
    if (o.image !== undefined) {
      if (typeof o.image !== 'string') throw bad(`entry ${i}: image must be a directory path`);
      spec.image = resolve(dirname(file), o.image);
    }
    if (o.cmdline !== undefined) {
      if (typeof o.cmdline !== 'string') throw bad(`entry ${i}: cmdline must be a string`);
      spec.cmdline = o.cmdline;
    }
    if (o.qemu_args !== undefined) {
      if (!Array.isArray(o.qemu_args) || !o.qemu_args.every((a) => typeof a === 'string'))
        throw bad(`entry ${i}: qemu_args must be an array of strings`);
      spec.qemu_args = o.qemu_args as string[];
    }
    return spec;
  });
  const labels = new Set(specs.map((v) => v.label));
  if (labels.size !== specs.length) throw bad('labels must differ');
  return specs;
}

export function readVariants(file: string): VariantSpec[] {
  return parseVariants(readFileSync(file, 'utf8'), file);
}
