import { Args, Flags } from '@oclif/core';
import type { VmSshResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { guestSshArgv, runGuestSsh } from '../../guest-run.ts';
import { vmRunDefaults } from '../../image-defaults.ts';
import { SshSpawnError } from '../../ssh-exec.ts';
import { checkVmName, usageError } from '../../vm-ref.ts';
import { heartbeat, sshDetailsResuming } from '../../idle-resume.ts';

export interface VmExecOutput extends VmSshResult {
  /** The directory the command runs in (none: the login directory). */
  cwd?: string;
  /** The ssh command line banger would run. */
  argv: string[];
}

/** What banger exits with when the ssh binary cannot be run (like a shell's "command not found"). */
const EXIT_NO_SSH = 127;

export default class VmExec extends BangerCommand {
  static override summary = 'Run a command in a running VM, in its workspace directory when it has one.';
  static override description = `Runs the words after -- in the VM over ssh (banger's key, the VM's pinned host key) and exits with the command's exit code. Each argument arrives exactly as you typed it (use sh -c '...' when you want the remote shell to expand $VARS, globs or pipes).

The command runs in the VM's workspace directory (/root/repo unless the workspace was prepared elsewhere) when it has one — see banger vm run PATH and banger vm workspace prepare — else in the image's WorkingDir (OCI images), else in root's home; --cwd picks another directory. An OCI image's Env is exported to it and it runs as the image's User (through runuser). Exit code 255 means ssh itself failed (could not connect or authenticate). With --json it prints the connection details and the ssh command line instead of running it.`;
  static override examples = [
    { description: 'Run the tests in the workspace', command: '<%= config.bin %> vm exec dev -- make test' },
    {
      description: 'Somewhere else, with shell syntax',
      command: "<%= config.bin %> vm exec dev --cwd /var/log -- sh -c 'ls | wc -l'",
    },
    { description: 'A full-screen program', command: '<%= config.bin %> vm exec dev -t -- htop' },
  ];
  static override strict = false;
  static override usage = 'vm exec NAME [--cwd DIR] [-t] [--json] [--socket <value>] -- COMMAND [ARG...]';
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id); it must be running.' }),
  };
  static override flags = {
    cwd: Flags.string({
      summary: 'Directory in the VM to run in (default: the workspace directory, else the home directory).',
      helpValue: '<dir>',
    }),
    tty: Flags.boolean({ char: 't', summary: 'Give the command a terminal (for full-screen programs).' }),
  };

  async run(): Promise<VmExecOutput | undefined> {
    // Everything after the first `--` is the command, untouched by oclif's parser.
    const dd = this.argv.indexOf('--');
    const command = dd === -1 ? [] : this.argv.slice(dd + 1);
    if (dd !== -1) this.argv = this.argv.slice(0, dd);
    const { args, argv, flags } = await this.parseWith(VmExec);
    const extra = argv.slice(1).map(String);
    if (extra.length > 0) {
      throw usageError(
        `unexpected ${extra.map((a) => `"${a}"`).join(' ')}: put the command after --, e.g. ${this.config.bin} vm exec ${args.name} -- ${extra.join(' ')}`,
      );
    }
    if (command.length === 0) {
      throw usageError(
        `give the command to run after --, e.g. ${this.config.bin} vm exec ${args.name} -- ls -la (for a shell: ${this.config.bin} vm ssh ${args.name})`,
      );
    }
    checkVmName(args.name);
    if (flags.cwd !== undefined && !flags.cwd.startsWith('/'))
      throw usageError(`--cwd ${flags.cwd}: give an absolute path in the VM`);
    const [details, defaults] = await Promise.all([
      // An idle-paused VM is resumed first (said on stderr).
      sshDetailsResuming(this.client, args.name),
      vmRunDefaults(this.client, args.name),
    ]);
    // --cwd, else the workspace, else the image's WorkingDir; its Env and User apply as well.
    const cwd = flags.cwd ?? defaults.workspace ?? defaults.workingDir;
    const sshArgv = guestSshArgv(details, {
      command,
      cwd,
      env: defaults.env,
      user: defaults.user,
      tty: flags.tty,
    });
    if (this.jsonEnabled()) return { ...details, ...(cwd ? { cwd } : {}), argv: ['ssh', ...sshArgv] };

    // The command keeps the VM marked used (idle pause) while it runs.
    const stopBeat = heartbeat(this.client, args.name);
    try {
      const outcome = await runGuestSsh(sshArgv, { endOnSignal: false });
      if (outcome.code === 255) {
        process.stderr.write(
          `banger: ssh exited 255: ssh itself failed (could not connect or authenticate to ${details.user}@${details.host}:${details.port}), or the command exited 255; check the VM with: ${this.config.bin} vm health ${args.name}\n`,
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
