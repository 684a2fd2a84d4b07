// Copy-on-write root disks: a qcow2 overlay on the read-only base image, sized for the VM.
// Creation cost does not depend on the base's size.
import { stat } from 'node:fs/promises';
import { VmError } from './errors.ts';

const invalid = (message: string): VmError => new VmError('invalid', message);
import { run } from './exec.ts';

export async function createOverlay(
  base: string,
  overlay: string,
  sizeBytes: number,
  baseFormat: 'raw' | 'qcow2' = 'raw',
): Promise<void> {
  // A qcow2 base (a derived image) is as large as its virtual size, not its file.
  const baseBytes = baseFormat === 'qcow2' ? (await diskInfo(base)).virtualBytes : (await stat(base)).size;
  if (sizeBytes < baseBytes) {
    throw invalid(`disk size ${sizeBytes} bytes is smaller than the image (${baseBytes} bytes)`);
  }
  await run('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    base,
    '-F',
    baseFormat,
    overlay,
    String(sizeBytes),
  ]);
}

export interface DiskInfo {
  virtualBytes: number;
  allocatedBytes: number;
}

export async function diskInfo(path: string): Promise<DiskInfo> {
  const st = await stat(path);
  // Allocated blocks of the overlay file itself (the base is shared).
  const allocatedBytes = st.blocks * 512;
  const { stdout } = await run('qemu-img', ['info', '--output=json', '-U', path]);
  const info = JSON.parse(stdout) as { 'virtual-size'?: number };
  return { virtualBytes: info['virtual-size'] ?? 0, allocatedBytes };
}
