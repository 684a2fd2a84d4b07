import { Args, Flags } from '@oclif/core';
import type { VmSshResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { guestSshArgv } from '../../guest-run.ts';
import { vmRunDefaults } from '../../image-defaults.ts';
import { buildSshArgv, runSsh, SshSpawnError } from '../../ssh-exec.ts';
import { checkVmName, usageError } from '../../vm-ref.ts';
import { heartbeat, sshDetailsResuming } from '../../idle-resume.ts';

export interface VmSshOutput extends VmSshResult {
  /** The ssh command line banger would run. */
  argv: string[];
}

/** What banger exits with when the ssh binary cannot be run (like a shell's "command not found"). */
const EXIT_NO_SSH = 127;

export default class VmSsh extends BangerCommand {
  static override summary = 'Open a shell in a VM, or run one command in it.';
  static override description = `Asks the daemon how to reach the VM (it must be running), then runs your system ssh with banger's key and the VM's pinned host key. With no command you get an interactive login shell. After --, the words are run in the VM as one command, quoted so each argument arrives exactly as you typed it (spaces, quotes, $VARS and globs are not re-interpreted by the remote shell; use sh -c '...' when you want them to be). For an OCI image, its Env is exported, commands and the shell run as its User and start in its WorkingDir (the workspace directory, when there is one, instead). banger exits with the command's exit code; 255 means ssh itself failed (could not connect or authenticate), and banger says so. With --json it prints the connection details and the ssh command line instead of running it.`;
  static override examples = [
    '<%= config.bin %> vm ssh calm-otter',
    '<%= config.bin %> vm ssh calm-otter -- uname -a',
    "<%= config.bin %> vm ssh calm-otter -- sh -c 'cd /srv && make test'",
    '<%= config.bin %> vm ssh calm-otter -t -- htop',
    '<%= config.bin %> vm ssh calm-otter --json',
  ];
  static override strict = false;
  static override usage = 'vm ssh NAME [-t] [--json] [--socket <value>] [-- COMMAND [ARG...]]';
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };
  static override flags = {
    tty: Flags.boolean({
      char: 't',
      summary: 'Give the command a terminal (for full-screen programs such as top or vim).',
      description: 'An interactive login (no command) gets one anyway when banger runs on a terminal.',
    }),
  };

  async run(): Promise<VmSshOutput | undefined> {
    // Everything after the first `--` is the remote command, passed on untouched: oclif's argv
    // reorders repeated words, so split it off before parsing.
    const dd = this.argv.indexOf('--');
    const command = dd === -1 ? [] : this.argv.slice(dd + 1);
    if (dd !== -1) this.argv = this.argv.slice(0, dd);
    const { args, argv, flags } = await this.parseWith(VmSsh);
    const extra = argv.slice(1);
    if (extra.length > 0) {
      throw usageError(
        `unexpected ${extra.map((a) => `"${String(a)}"`).join(' ')}: put the command to run after --, e.g. ${this.config.bin} vm ssh ${args.name} -- ${extra.map(String).join(' ')}`,
      );
    }
    checkVmName(args.name);
    const [details, defaults] = await Promise.all([
      // An idle-paused VM is resumed first (said on stderr).
      sshDetailsResuming(this.client, args.name),
      vmRunDefaults(this.client, args.name),
    ]);
    const tty =
      flags.tty || (command.length === 0 && process.stdin.isTTY === true && process.stdout.isTTY === true);
    // An OCI image's config (Env, User, WorkingDir, which the workspace overrides) applies here too;
    // without one, the plain ssh login as always.
    const cwd = defaults.workingDir !== undefined ? (defaults.workspace ?? defaults.workingDir) : undefined;
    const sshArgv =
      defaults.env.length > 0 || defaults.user !== undefined || cwd !== undefined
        ? guestSshArgv(details, { command, cwd, env: defaults.env, user: defaults.user, tty })
        : buildSshArgv(details, { command, tty });
    if (this.jsonEnabled()) return { ...details, argv: ['ssh', ...sshArgv] };

    // The session keeps the VM marked used (idle pause) while it is open.
    const stopBeat = heartbeat(this.client, args.name);
    try {
      const outcome = await runSsh(sshArgv);
      if (outcome.code === 255) {
        process.stderr.write(
          `banger: ssh exited 255: ssh itself failed (could not connect or authenticate to ${details.user}@${details.host}:${details.port}); check the VM with: ${this.config.bin} vm health ${args.name}\n`,
        );
      }
      process.exitCode = outcome.code;
    } catch (err) {
      if (!(err instanceof SshSpawnError)) throw err;
      process.stderr.write(`error: ${err.message}\n`);
      process.exitCode = EXIT_NO_SSH;
    } finally {
      stopBeat();
    }
    return undefined;
  }
}
