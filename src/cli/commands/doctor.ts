import { Flags } from '@oclif/core';
import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { accessSync, constants, existsSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { loadConfig } from '../../daemon/config.ts';
import { SYSTEM_CONFIG } from '../../install/units.ts';
import { defaultConfigFile, INSTALL_TOML } from '../../paths.ts';
import { BangerCommand } from '../base.ts';
import { runDoctor, type Check, type DoctorProbes } from '../doctor.ts';
import { paint, useColor } from '../format.ts';

export interface DoctorResult {
  checks: Check[];
  summary: { pass: number; warn: number; fail: number };
}

function runTool(
  file: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 10_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** One A query to 127.0.0.1:port; the rcode, or undefined after 2 s of silence. */
function dnsRcode(port: number, name: string): Promise<number | undefined> {
  const q = Buffer.concat([
    Buffer.from([0x0d, 0x0c, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])),
    Buffer.from([0, 0, 1, 0, 1]),
  ]);
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, 2000);
    s.on('error', () => {
      clearTimeout(t);
      s.close();
      resolve(undefined);
    });
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(m.length >= 4 ? m.readUInt16BE(2) & 0xf : undefined);
    });
    s.send(q, port, '127.0.0.1');
  });
}

export default class Doctor extends BangerCommand {
  static override summary = 'Check that this machine can run banger, and say how to fix what is missing.';
  static override description = `Checks, each PASS, WARN or FAIL with a fix hint: the daemon answers; KVM is usable (or that TCG will be used, and why); qemu is installed and its version; /dev/vhost-vsock; the root helper answers and serves the daemon's uid; banger's bridge; the .vm DNS server and whether the host's resolver routes .vm to it; the default image; free disk space where VMs live.

Exits 1 when any check FAILs, 0 otherwise (WARNs are things that work, slower or with less). --json prints every check for scripts.`;
  static override examples = [
    '<%= config.bin %> doctor',
    '<%= config.bin %> doctor --json | jq \'.checks[] | select(.status != "PASS")\'',
  ];
  static override flags = {
    config: Flags.string({
      summary: 'The daemon config to read bridge and DNS settings from.',
      description: `Default: ${SYSTEM_CONFIG} on a system install, else ${defaultConfigFile()}.`,
      helpValue: '<file>',
    }),
  };

  async run(): Promise<DoctorResult> {
    const { flags } = await this.parseWith(Doctor);
    const cfgPath = flags.config ?? (existsSync(INSTALL_TOML) ? SYSTEM_CONFIG : defaultConfigFile());
    const cfg = loadConfig(cfgPath);
    const probes: DoctorProbes = {
      socket: this.socketPath,
      status: () => this.client.daemon.status(undefined, { timeoutMs: 10_000 }),
      images: async () => (await this.client.image.list()).images,
      exists: (p) => existsSync(p),
      canOpenRw: (p) => {
        try {
          accessSync(p, constants.R_OK | constants.W_OK);
          return true;
        } catch {
          return false;
        }
      },
      run: runTool,
      freeBytes: async (p) => {
        const s = await statfs(p);
        return s.bavail * s.bsize;
      },
      dnsRcode,
      bridgeName: cfg.bridge_name,
      bridgeCidr: cfg.bridge_cidr,
      dnsPort: cfg.dns_port,
    };
    const checks = await runDoctor(probes);
    const color = useColor(process.stdout);
    const tint = { PASS: 'green', WARN: 'yellow', FAIL: 'red' } as const;
    const w = Math.max(...checks.map((c) => c.name.length));
    for (const c of checks) {
      this.say(`${paint(color, tint[c.status], c.status)}  ${c.name.padEnd(w)}  ${c.detail}`);
      if (c.hint) this.say(`${' '.repeat(6 + w + 2)}fix: ${c.hint}`);
    }
    const summary = {
      pass: checks.filter((c) => c.status === 'PASS').length,
      warn: checks.filter((c) => c.status === 'WARN').length,
      fail: checks.filter((c) => c.status === 'FAIL').length,
    };
    this.say(`\n${summary.pass} passed, ${summary.warn} warnings, ${summary.fail} failed`);
    if (summary.fail > 0) process.exitCode = 1;
    return { checks, summary };
  }
}
