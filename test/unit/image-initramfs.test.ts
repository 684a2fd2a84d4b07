import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  generateInitScript,
  moduleName,
  parseModulesBuiltin,
  parseModulesDep,
  resolveModuleOrder,
} from '../../src/image/initramfs.ts';

// Excerpt of linux-image-6.1.0-56-cloud-amd64's modules.dep (as depmod -b writes it): a line lists
// the dependency to load first last, and virtio.ko itself needs virtio_ring.ko.
const SAMPLE_DEP = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/acpi/button.ko:
kernel/drivers/input/evdev.ko:
kernel/net/vmw_vsock/vsock.ko:
`;
const SAMPLE_BUILTIN = 'kernel/fs/ext4/ext4.ko\nkernel/lib/crc32c_generic.ko\n';

const names = (paths: string[]): string[] => paths.map(moduleName);

describe('modules.dep', () => {
  it('parses lines and normalises module names', () => {
    const dep = parseModulesDep(SAMPLE_DEP);
    expect(dep.size).toBe(14);
    expect(dep.get('kernel/drivers/virtio/virtio.ko')).toEqual(['kernel/drivers/virtio/virtio_ring.ko']);
    expect(dep.get('kernel/drivers/virtio/virtio_ring.ko')).toEqual([]);
    expect(moduleName('kernel/drivers/hid/hid-generic.ko.xz')).toBe('hid_generic');
    expect(parseModulesBuiltin(SAMPLE_BUILTIN).has('ext4')).toBe(true);
  });

  it('orders every module after its dependencies, each once', () => {
    const dep = parseModulesDep(SAMPLE_DEP);
    const r = resolveModuleOrder(dep, new Set(), [
      'virtio_mmio',
      'virtio_blk',
      'virtio_net',
      'virtio_console',
      'button',
      'evdev',
    ]);
    expect(names(r.order)).toEqual([
      'virtio_ring',
      'virtio',
      'virtio_mmio',
      'virtio_blk',
      'failover',
      'net_failover',
      'virtio_net',
      'virtio_console',
      'button',
      'evdev',
    ]);
    // Every dependency listed on a module's line precedes it.
    for (const [i, path] of r.order.entries()) {
      for (const d of dep.get(path) ?? []) expect(r.order.indexOf(d)).toBeLessThan(i);
    }
    expect(new Set(r.order).size).toBe(r.order.length);
  });

  it('reports built-in and missing modules instead of loading them', () => {
    const r = resolveModuleOrder(parseModulesDep(SAMPLE_DEP), parseModulesBuiltin(SAMPLE_BUILTIN), [
      'ext4',
      'virtio-blk',
      'no_such_module',
    ]);
    expect(r.builtin).toEqual(['ext4']);
    expect(r.missing).toEqual(['no_such_module']);
    expect(names(r.order)).toEqual(['virtio_ring', 'virtio', 'virtio_blk']);
  });
});

describe('generateInitScript', () => {
  const script = generateInitScript({
    modules: ['virtio_ring.ko', 'virtio.ko', 'virtio_mmio.ko', 'virtio_blk.ko'],
    rootLabel: 'banger-root',
    seedLabel: 'banger-seed',
  });

  it('loads the modules in the given order and finds root by label', () => {
    expect(script.startsWith('#!/bin/busybox sh\n')).toBe(true);
    expect(script).toContain('for m in virtio_ring.ko virtio.ko virtio_mmio.ko virtio_blk.ko; do');
    expect(script).toContain('root=LABEL=banger-root');
    expect(script).toContain('banger.root=*) broot=${arg#banger.root=}');
    expect(script).toContain('findfs "$1"');
    expect(script).toContain('findfs LABEL=banger-seed');
    expect(script).toContain('exec switch_root /newroot "$init"');
    expect(script).toContain('FATAL');
  });

  it('is valid sh', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bg-init-'));
    try {
      writeFileSync(join(dir, 'init'), script);
      execFileSync('sh', ['-n', join(dir, 'init')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
