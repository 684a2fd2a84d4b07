import { resolve } from 'node:path';
import { Args, Flags } from '@oclif/core';
import type {
  Image,
  VmCreatePlanParams,
  VmCreatePlanResult,
  VmCreateStatusResult,
  VmSshResult,
  Vm,
  Workspace,
} from '../../../../generated/types.gen.ts';
import { ErrorResponse, isErrorCode } from '../../../rpc/errors.ts';
import { opIdFromEnv } from '../../../slurm/op-env.ts';
import { DEFAULT_GUEST_PATH } from '../../../vm/workspace.ts';
import { inspectRepo } from '../../../vm/workspace-repo.ts';
import { BangerCommand } from '../../base.ts';
import { EGRESS_DESCRIPTION, EGRESS_SUMMARY, egressFlag, secretFlag } from '../../egress-flag.ts';
import { idlePauseAfterFlag } from '../../idle-flag.ts';
import { heartbeat, sshDetailsResuming } from '../../idle-resume.ts';
import {
  DevcontainerError,
  findDevcontainer,
  readDevcontainer,
  unsupportedWarning,
  type Devcontainer,
} from '../../devcontainer.ts';
import {
  defaultPulledName,
  findImageByReference,
  forwardLine,
  devcontainerSteps,
  LifecycleError,
  runDefaults,
  runLifecycle,
  setupScript,
  sshLineRunner,
  startForwards,
  stopForwards,
  type Forward,
  type RunDefaults,
} from '../../devcontainer-run.ts';
import { entrypointCommand, type ImageRunConfig } from '../../guest-command.ts';
import { EXIT_INTERRUPTED } from '../../exit-codes.ts';
import {
  formatBoot,
  warmFallback,
  formatDuration,
  formatVmNetwork,
  formatVmSpec,
  paint,
  useColor,
} from '../../format.ts';
import { guestSshArgv, runGuestSsh } from '../../guest-run.ts';
import {
  planSteps,
  SignalGuard,
  specLine,
  type RunPlanInput,
  type VmRunDetached,
  type VmRunDryRun,
} from '../../run-plan.ts';
import {
  failedCreateHint,
  failedStep,
  operationElapsed,
  watchOperation,
  type Watched,
} from '../../progress.ts';
import { SshSpawnError } from '../../ssh-exec.ts';
import { shellQuote, signalExitCode } from '../../../util/shell.ts';
import { checkResourceName, checkVmName, usageError } from '../../vm-ref.ts';
import { diskSizeFlag, memoryFlag, specParams } from './create.ts';
import { describeWorkspace } from './workspace/prepare.ts';

/** How long a signal sent with ssh's own (scancel signals the whole job) may take to reach banger. */
const LATE_SIGNAL_MS = 200;

export default class VmRun extends BangerCommand {
  static override summary =
    'Create a sandbox VM, copy a git repo into it, and run a command or a shell there.';
  static override description = `One command from nothing to a running sandbox. banger vm run prints the resolved spec (vCPUs, memory, disk, image), creates and boots a VM from the default image (building it on first use), showing each step with its duration, and waits until SSH answers. Then:

  - with PATH (a git work tree), copies the repository's git-tracked files into /root/repo, with a shallow git history so git status and git diff work there (untracked files only with --include-untracked; ignored files never; bare repositories and submodules are refused unless --mode full_copy);
  - when PATH has a .devcontainer/devcontainer.json (or .devcontainer.json), follows it: its image (pulled when not here yet; --image overrides it), containerEnv and remoteEnv, remoteUser/containerUser (created when missing), workspaceFolder (default /workspaces/<basename>, instead of /root/repo), its lifecycle commands (onCreateCommand, updateContentCommand, postCreateCommand, postStartCommand, postAttachCommand; output prefixed on stderr; a failure ends the run with its exit code) and forwardPorts (ssh forwards from 127.0.0.1 on the host, printed; they last as long as the command, or with -d until the VM goes away). Keys it does not support yet are named in one warning line; --no-devcontainer ignores the file;
  - with -- COMMAND, runs it (in /root/repo when PATH was given) and exits with its exit code; each argument arrives exactly as typed; an OCI image's Env, WorkingDir and User apply to it (see banger vm exec), and with --image and no command, the image's Entrypoint and Cmd are the command;
  - without a command, opens an interactive shell (in /root/repo when PATH was given).

--rm deletes the VM when the command or the shell ends, also on Ctrl-C. -d/--detach returns as soon as the VM is ready (and the workspace copied): use banger vm exec, vm ssh and vm workspace export on it, and vm delete when done. --dry-run prints the spec and the plan (including how many files would be copied) and changes nothing.

Progress and banger's own messages go to stderr; stdout carries only the command's output (or the result, with -d or --dry-run). If the VM does not come up, banger names the step that failed (for wait_ready, the guest stage it reached) and where to read the boot console: the failed create is undone, VM included, so banger op trace OP-ID shows the console of that boot with the daemon's log lines.`;
  static override examples = [
    { description: 'A throwaway shell', command: '<%= config.bin %> vm run --rm' },
    {
      description: 'Run the tests of this repository in a fresh VM',
      command: '<%= config.bin %> vm run . --rm -- make test',
    },
    {
      description: 'Exit code of the command is banger’s',
      command: "<%= config.bin %> vm run --rm -- sh -c 'exit 3'; echo $?",
    },
    {
      description: 'Keep a bigger VM around with the repository, and use it later',
      command:
        '<%= config.bin %> vm run ~/src/app -d --name app --vcpu 4 --memory 4G && <%= config.bin %> vm exec app -- npm test',
    },
    {
      description: 'Run the tests of a repository that declares its toolchain in a devcontainer.json',
      command: '<%= config.bin %> vm run ~/src/app --rm -- python3 -m unittest',
    },
    {
      description: 'What would happen, without doing it',
      command: '<%= config.bin %> vm run . --include-untracked --dry-run',
    },
  ];
  static override strict = false;
  static override usage = 'vm run [PATH] [FLAGS] [-- COMMAND [ARG...]]';
  static override args = {
    path: Args.string({
      required: false,
      description: 'A git work tree on this machine to copy into the VM (/root/repo).',
    }),
  };
  static override allowAutoContext = true;
  static override flags = {
    name: Flags.string({ char: 'n', summary: 'Name of the VM (default: a random friendly name).' }),
    image: Flags.string({ char: 'i', summary: 'Image to create it from (default: the default image).' }),
    vcpu: Flags.integer({ min: 1, max: 64, summary: 'Virtual CPUs (default from config).' }),
    memory: memoryFlag({
      char: 'm',
      summary: 'Memory: MiB (2048) or a size with a unit (2G) (default from config).',
    }),
    'disk-size': diskSizeFlag({ summary: 'Root disk size, e.g. 8G (default from config).' }),
    network: Flags.option({
      options: ['user', 'bridge'] as const,
      summary:
        'user: rootless, SSH forwarded from 127.0.0.1; bridge: on banger’s bridge (needs the root helper).',
      description:
        'Default: what the daemon is configured for (bridge when the root helper is reachable, else user).',
    })(),
    nat: Flags.boolean({ summary: 'Give the guest outbound internet through NAT (bridge mode).' }),
    egress: egressFlag({ summary: EGRESS_SUMMARY, description: EGRESS_DESCRIPTION }),
    secret: secretFlag,
    'idle-pause-after': idlePauseAfterFlag,
    cold: Flags.boolean({ summary: 'Boot cold even when a warm template of this spec exists.' }),
    rm: Flags.boolean({ summary: 'Delete the VM when the command or shell ends (also on Ctrl-C).' }),
    detach: Flags.boolean({ char: 'd', summary: 'Return once the VM is ready (and the workspace copied).' }),
    'dry-run': Flags.boolean({ summary: 'Print the spec and the plan; create nothing.' }),
    'include-untracked': Flags.boolean({
      summary: 'Also copy untracked files of PATH (never ignored ones).',
    }),
    mode: Flags.option({
      options: ['tracked', 'full_copy'] as const,
      summary: 'How PATH is copied: tracked (default) or full_copy (submodules too).',
    })(),
    'no-devcontainer': Flags.boolean({
      summary: 'Ignore PATH/.devcontainer/devcontainer.json (or PATH/.devcontainer.json).',
    }),
  };

  /**
   * The op id every call of this run carries, when the caller chose it (BANGER_OP_ID: banger slurm
   * run puts the job's op id there, so the node's `op trace` finds the whole sandbox under it).
   * Not the image pull's: that is an operation of its own and needs an id of its own.
   */
  private op: { opId?: string } = {};

  async run(): Promise<VmRunDryRun | VmRunDetached | undefined> {
    const opId = opIdFromEnv();
    if (opId !== undefined) this.op = { opId };
    const dd = this.argv.indexOf('--');
    const command = dd === -1 ? [] : this.argv.slice(dd + 1);
    if (dd !== -1) this.argv = this.argv.slice(0, dd);
    const { args, argv, flags } = await this.parseWith(VmRun);
    // --context auto: the context with the most free capacity, said on stderr.
    await this.resolveAutoContext();
    const extra = argv.slice(1).map(String);
    if (extra.length > 0) {
      throw usageError(
        `unexpected ${extra.map((a) => `"${a}"`).join(' ')}: vm run takes one PATH; put the command after --, e.g. ${this.config.bin} vm run ${args.path ?? '.'} -- ${extra.join(' ')}`,
      );
    }
    if (flags.detach && flags.rm)
      throw usageError(
        '-d/--detach leaves the VM running and --rm deletes it when the command ends: use one of them',
      );
    if (flags.detach && command.length > 0) {
      throw usageError(
        `-d/--detach runs no command: drop -d to run it and wait for it, or run it later with ${this.config.bin} vm exec NAME -- ${shellQuote(command)}`,
      );
    }
    if (args.path === undefined && (flags['include-untracked'] || flags.mode !== undefined))
      throw usageError(
        '--include-untracked and --mode apply to a PATH to copy: give one, e.g. vm run . --include-untracked',
      );
    if (this.jsonEnabled() && !flags.detach && !flags['dry-run']) {
      throw usageError(
        '--json needs --dry-run or -d/--detach (otherwise stdout is the command’s own output)',
      );
    }
    if (flags.name !== undefined) checkVmName(flags.name);
    if (flags.image !== undefined) checkResourceName(flags.image, 'image');

    // Check the repository before anything is created: a bare repo or a submodule fails here.
    const includeUntracked = flags['include-untracked'];
    const mode = flags.mode ?? 'tracked';
    let repo: RunPlanInput['repo'];
    if (args.path !== undefined) {
      const info = await inspectRepo(resolve(args.path), { includeUntracked, mode });
      repo = { ...info, mode, includeUntracked };
    }
    const err = process.stderr;
    const errColor = useColor(err);
    const dc =
      args.path !== undefined && repo && !flags['no-devcontainer']
        ? this.loadDevcontainer(resolve(args.path), repo.root)
        : undefined;

    const params: VmCreatePlanParams = specParams(flags);

    // The devcontainer's image: a local one pulled from that reference, else pulled now.
    let pull: RunPlanInput['pull'];
    if (dc?.image !== undefined && flags.image !== undefined) {
      err.write(`note: --image ${flags.image} overrides the image of ${dc.path} (${dc.image})\n`);
    } else if (dc?.image !== undefined) {
      const have = findImageByReference((await this.client.image.list()).images, dc.image);
      if (have) params.image = have.name;
      else if (flags['dry-run']) pull = { reference: dc.image, name: defaultPulledName(dc.image) };
      else params.image = (await this.pullImage(dc.image)).name;
    }

    const plan = await this.client.vm.create.plan(params, this.op);
    const shownPlan = pull ? { ...plan, image: pull.name, image_ready: true } : plan;
    const image = pull ? undefined : await this.imageOf(plan.image);
    const cfg = image?.oci_config;
    const defaults = runDefaults(cfg, dc);
    // `vm run --image NAME` with no command runs what the image would run (docker run's rule).
    let entry = false;
    if (command.length === 0 && flags.image !== undefined && !flags.detach) {
      const ep = entrypointCommand(cfg);
      if (ep.length > 0) {
        command.push(...ep);
        entry = true;
        err.write(`running the image's entrypoint and command: ${shellQuote(ep)}\n`);
      }
    }
    const guestPath = dc ? dc.workspaceFolder : DEFAULT_GUEST_PATH;
    if (flags['dry-run']) {
      this.say(`${specLine(shownPlan)}${pull ? ' (pulled first)' : ''}`);
      return this.dryRun(shownPlan, repo, command, flags.rm, flags.detach, {
        guestPath,
        ...(pull ? { pull } : {}),
        extraSteps: dc ? devcontainerSteps(dc) : [],
        ...(defaults.user !== undefined ? { runAs: defaults.user } : {}),
      });
    }
    // stderr is for people, with or without --json (which only shapes stdout).
    err.write(`${specLine(plan)}\n`);

    // SIGTERM/SIGHUP from here on (Slurm's scancel, a closed terminal) cancel the create as
    // Ctrl-C does, instead of killing banger and leaving the daemon to finish a VM nobody deletes.
    const early = new SignalGuard(['SIGTERM', 'SIGHUP']);
    let watched: Watched<VmCreateStatusResult>;
    let name: string;
    try {
      // Create it under the planned name, so the name printed is the name made.
      const begun = await this.client.vm.create.begin(
        { ...params, name: plan.name, ...(flags.cold ? { cold: true } : {}) },
        this.op,
      );
      name = begun.name;
      watched = await watchOperation(
        () => this.client.vm.create.status({ operation_id: begun.operation_id }),
        {
          title: `Creating ${name}`,
          cancel: () => this.client.vm.create.cancel({ operation_id: begun.operation_id }, this.op),
          color: errColor,
          abort: early.signal,
        },
      );
    } finally {
      early.dispose();
    }
    const stopped = early.received;
    if (stopped && watched.last.operation.state !== 'succeeded') {
      err.write(
        `create of ${name} ${watched.last.operation.state === 'canceled' ? 'canceled' : 'ended'} on ${stopped}; what it had done was undone (${watched.last.operation.id})\n`,
      );
      process.exitCode = signalExitCode(stopped);
      return undefined;
    }
    const vm = this.createdVm(watched.last, watched.interrupted, name);
    const fallback = warmFallback(watched.last.operation);
    if (fallback) err.write(`${paint(errColor, 'yellow', '!')} ${fallback}\n`);
    err.write(
      `${paint(errColor, 'green', '✓')} ${name} is running (${formatVmSpec(vm)}, ${formatVmNetwork(vm)}), created in ${formatDuration(operationElapsed(watched.last.operation, Date.now()))} (${formatBoot(vm)})\n`,
    );
    if (watched.interrupted) {
      // The signal came too late to cancel the create: honour it now.
      await this.finish(name, flags.rm, stopped ?? 'SIGINT');
      return undefined;
    }
    // From here on the VM exists: a signal must not kill banger before --rm has deleted it.
    const guard = new SignalGuard();
    try {
      return await this.afterCreate(name, guard, {
        repo,
        includeUntracked,
        mode,
        command,
        rm: flags.rm,
        detach: flags.detach,
        guestPath,
        defaults,
        dc,
        entry,
      });
    } finally {
      guard.dispose();
    }
  }

  /** The devcontainer.json of PATH (or of the repository's root), parsed; its warnings said. */
  private loadDevcontainer(path: string, root: string): Devcontainer | undefined {
    const file = findDevcontainer(path) ?? (root !== path ? findDevcontainer(root) : undefined);
    if (file === undefined) return undefined;
    let dc: Devcontainer;
    try {
      dc = readDevcontainer(file, { localEnv: process.env, localWorkspaceFolder: root });
    } catch (e) {
      if (e instanceof DevcontainerError)
        throw usageError(`${e.message} (--no-devcontainer ignores the file)`);
      throw e;
    }
    const c = useColor(process.stderr);
    process.stderr.write(
      `devcontainer: ${file}${dc.image !== undefined ? `, image ${dc.image}` : ''}, workspace ${dc.workspaceFolder}\n`,
    );
    const warning = unsupportedWarning(dc);
    if (warning) process.stderr.write(`${paint(c, 'yellow', '!')} ${warning}\n`);
    return dc;
  }

  /** An image's record, or undefined when there is none yet (the default image, built on first use). */
  private async imageOf(name: string): Promise<(Image & { oci_config?: ImageRunConfig }) | undefined> {
    try {
      return (await this.client.image.show({ name })).image;
    } catch (e) {
      if (e instanceof ErrorResponse && e.code === 'not_found') return undefined;
      throw e;
    }
  }

  /** Pull an image a devcontainer.json names, with progress like vm create's. */
  private async pullImage(reference: string): Promise<Image> {
    const c = useColor(process.stderr);
    const begun = await this.client.image.pull.begin({ reference });
    const watched = await watchOperation(
      () => this.client.image.pull.status({ operation_id: begun.operation_id }),
      {
        title: `Pulling ${reference} as image ${begun.name}`,
        cancel: () => this.client.image.pull.cancel({ operation_id: begun.operation_id }),
        color: c,
      },
    );
    const op = watched.last.operation;
    if (op.state === 'succeeded' && watched.last.image) {
      process.stderr.write(
        `${paint(c, 'green', '✓')} pulled ${reference} as image ${watched.last.image.name}\n`,
      );
      return watched.last.image;
    }
    const step = failedStep(op);
    const code =
      op.error && isErrorCode(op.error.code)
        ? op.error.code
        : op.state === 'canceled'
          ? 'canceled'
          : 'operation_failed';
    throw new ErrorResponse(
      code,
      `pull of ${reference} ${op.state === 'canceled' ? 'canceled' : 'failed'}${step ? ` at step ${step.name}` : ''}: ${op.error?.message ?? step?.detail ?? 'no detail'}`,
      { opId: op.id },
    );
  }

  private async afterCreate(
    name: string,
    guard: SignalGuard,
    o: {
      repo: RunPlanInput['repo'];
      includeUntracked: boolean;
      mode: Workspace['mode'];
      command: string[];
      rm: boolean;
      detach: boolean;
      guestPath: string;
      defaults: RunDefaults;
      dc: Devcontainer | undefined;
      /** The command is the image's Entrypoint+Cmd: give it a terminal as docker run -it would. */
      entry: boolean;
    },
  ): Promise<VmRunDetached | undefined> {
    const err = process.stderr;
    const { command, defaults, dc } = o;
    const flags = { rm: o.rm, detach: o.detach };
    let workspace: Workspace | undefined;
    if (o.repo) {
      const got = await this.copyWorkspace(
        name,
        o.repo.root,
        o.guestPath,
        o.includeUntracked,
        o.mode,
        o.rm,
        guard,
      );
      if ('signal' in got) {
        await this.finish(name, o.rm, got.signal);
        return undefined;
      }
      workspace = got.workspace;
    }
    if (guard.received) {
      await this.finish(name, o.rm, guard.received);
      return undefined;
    }
    const cwd = workspace?.guest_path ?? defaults.workingDir;

    // Users, lifecycle commands and forwarded ports (a devcontainer.json, or an image's User).
    let forwards: Forward[] = [];
    // Asked once: the setup's ssh and the command's reach the same running VM.
    let details: VmSshResult | undefined;
    const script = setupScript([dc?.containerUser, dc?.remoteUser], defaults.user, workspace?.guest_path);
    if (script !== undefined || (dc && (dc.lifecycle.length > 0 || dc.forwardPorts.length > 0))) {
      details = await this.client.vm.ssh({ name }, this.op);
      const run = sshLineRunner(details, { signal: guard.signal });
      const out = (t: string): void => void err.write(`${t}\n`);
      try {
        if (script !== undefined) {
          const code = await run(`sh -c ${shellQuote([script])}`, out);
          if (code !== 0) throw new LifecycleError('user setup', undefined, code);
        }
        if (dc && !guard.received)
          await runLifecycle(dc.lifecycle, { run, out, cwd, env: defaults.env, user: defaults.user });
        if (dc && dc.forwardPorts.length > 0 && !guard.received) {
          forwards = await startForwards(details, dc.forwardPorts, { detached: flags.detach });
          for (const f of forwards)
            err.write(`${forwardLine(f)}${flags.detach ? '' : ' (until the command ends)'}\n`);
        }
      } catch (e) {
        if (guard.received) {
          await this.finish(name, o.rm, guard.received);
          return undefined;
        }
        if (!(e instanceof LifecycleError)) {
          if (o.rm) await this.deleteVm(name);
          throw e;
        }
        err.write(`${paint(useColor(err), 'red', '✗')} ${e.message}\n`);
        if (o.rm) await this.deleteVm(name);
        else err.write(`${name} is still running; delete it with: ${this.config.bin} vm delete ${name}\n`);
        process.exitCode = e.exitCode;
        return undefined;
      }
      if (guard.received) {
        stopForwards(forwards);
        await this.finish(name, o.rm, guard.received);
        return undefined;
      }
    }

    if (flags.detach) {
      const shown = (await this.client.vm.show({ name }, this.op)).vm;
      this.say(`${name} is running${workspace ? ` with its workspace in ${workspace.guest_path}` : ''}`);
      this.say(`  run a command: ${this.config.bin} vm exec ${name} -- CMD`);
      this.say(`  open a shell:  ${this.config.bin} vm ssh ${name}`);
      if (workspace)
        this.say(`  get changes:   ${this.config.bin} vm workspace export ${name} | git apply --index`);
      this.say(`  delete it:     ${this.config.bin} vm delete ${name}`);
      const result: VmRunDetached = workspace ? { vm: shown, workspace } : { vm: shown };
      if (forwards.length > 0)
        result.forwards = forwards.map((f) => ({
          host_port: f.hostPort,
          guest_host: f.spec.guestHost,
          guest_port: f.spec.guestPort,
          ...(f.child.pid !== undefined ? { pid: f.child.pid } : {}),
        }));
      return result;
    }

    // (An idle pause between the create and here is resumed, said on stderr.)
    details ??= await sshDetailsResuming(this.client, name, this.op);
    const interactive = command.length === 0 || o.entry;
    const tty = interactive && process.stdin.isTTY === true && process.stdout.isTTY === true;
    const sshArgv = guestSshArgv(details, { command, cwd, env: defaults.env, user: defaults.user, tty });
    let code: number;
    // The session keeps the VM marked used (idle pause) while it is open.
    const stopBeat = heartbeat(this.client, name);
    try {
      const outcome = await runGuestSsh(sshArgv, { endOnSignal: flags.rm });
      stopBeat();
      stopForwards(forwards);
      // A scheduler's cancel (scancel) signals banger and ssh at once: ssh may die of it (255, or
      // by the signal) before banger's own handler has run. Give that signal a moment to arrive,
      // so the run reports it (128+n, the VM deleted) instead of ssh's failure.
      if (!outcome.interruptedBy && !guard.received && (outcome.code === 255 || outcome.signal))
        await new Promise((r) => setTimeout(r, LATE_SIGNAL_MS));
      const interrupted = outcome.interruptedBy ?? guard.received;
      if (interrupted && flags.rm) {
        await this.finish(name, true, interrupted);
        return undefined;
      }
      code = outcome.code;
      if (code === 255) {
        err.write(
          `banger: ssh exited 255: ssh itself failed (could not connect or authenticate), or the command exited 255; check the VM with: ${this.config.bin} vm health ${name}\n`,
        );
      }
    } catch (e) {
      stopBeat();
      stopForwards(forwards);
      if (!(e instanceof SshSpawnError)) throw e;
      err.write(`error: ${e.message}\n`);
      code = 127;
    }
    if (flags.rm) await this.deleteVm(name);
    else err.write(`${name} is still running; delete it with: ${this.config.bin} vm delete ${name}\n`);
    process.exitCode = code;
    return undefined;
  }

  private dryRun(
    plan: VmCreatePlanResult,
    repo: RunPlanInput['repo'],
    command: string[],
    rm: boolean,
    detach: boolean,
    more: Pick<RunPlanInput, 'guestPath' | 'pull' | 'extraSteps' | 'runAs'>,
  ): VmRunDryRun {
    const steps = planSteps({
      plan,
      ...(repo ? { repo } : {}),
      command,
      rm,
      detach,
      bin: this.config.bin,
      ...more,
    });
    this.say('dry run: nothing was created or changed. vm run would:');
    steps.forEach((s, i) => this.say(`  ${i + 1}. ${s}`));
    const out: VmRunDryRun = { dry_run: true, spec: plan, command, steps };
    if (repo) {
      out.workspace = {
        host_path: repo.root,
        guest_path: more.guestPath ?? DEFAULT_GUEST_PATH,
        mode: repo.mode,
        include_untracked: repo.includeUntracked,
        base_commit: repo.head,
        files: repo.files.length,
        untracked_files: repo.untracked,
        bytes: repo.bytes,
      };
      if (repo.branch) out.workspace.branch = repo.branch;
    }
    return out;
  }

  /** The VM of a finished create, or the error that explains why there is none. */
  private createdVm(last: VmCreateStatusResult, interrupted: boolean, name: string): Vm {
    const op = last.operation;
    if (op.state === 'succeeded' && last.vm) return last.vm;
    if (op.state === 'canceled') {
      throw new ErrorResponse(
        'canceled',
        `create of ${name} canceled${interrupted ? '' : ` (${op.error?.message ?? 'not by this command'})`}; what it had done was undone`,
        { opId: op.id },
      );
    }
    const step = failedStep(op);
    const c = useColor(process.stderr);
    const took = step?.duration_ms !== undefined ? ` after ${formatDuration(step.duration_ms)}` : '';
    process.stderr.write(
      `${paint(c, 'red', '✗')} create of ${name} failed${step ? ` at step ${step.name}${took}` : ''}${step?.detail ? `: ${step.detail}` : ''}\n`,
    );
    process.stderr.write(`${failedCreateHint(this.config.bin, op.id, last.vm?.name)}\n`);
    const code = op.error && isErrorCode(op.error.code) ? op.error.code : 'operation_failed';
    throw new ErrorResponse(code, op.error?.message ?? step?.detail ?? `the create of ${name} failed`, {
      opId: op.id,
    });
  }

  /**
   * Copy the workspace in. Ctrl-C (or SIGTERM/SIGHUP) abandons the copy (the daemon stops it when
   * the call's connection closes) and is reported back; a failure with --rm deletes the VM first.
   */
  private async copyWorkspace(
    name: string,
    path: string,
    guestPath: string,
    includeUntracked: boolean,
    mode: Workspace['mode'],
    rm: boolean,
    guard: SignalGuard,
  ): Promise<{ workspace: Workspace } | { signal: NodeJS.Signals }> {
    const err = process.stderr;
    const c = useColor(err);
    const t0 = Date.now();
    err.write(`copying ${path} to ${name}:${guestPath} …\n`);
    try {
      const params = {
        name,
        path,
        ...(guestPath !== DEFAULT_GUEST_PATH ? { guest_path: guestPath } : {}),
        ...(includeUntracked ? { include_untracked: true } : {}),
        mode,
      };
      const r = await this.client.vm.workspace.prepare(params, { ...this.op, signal: guard.signal });
      err.write(
        `${paint(c, 'green', '✓')} workspace: ${describeWorkspace(r.workspace)} in ${formatDuration(Date.now() - t0)}\n`,
      );
      return { workspace: r.workspace };
    } catch (e) {
      if (guard.received) return { signal: guard.received };
      if (rm) await this.deleteVm(name);
      else
        err.write(
          `${name} is running without its workspace; try again with: ${this.config.bin} vm workspace prepare ${name} ${path}, or delete it: ${this.config.bin} vm delete ${name}\n`,
        );
      throw e;
    }
  }

  /** Interrupted: with --rm delete the VM; then exit as a signal would. */
  private async finish(name: string, rm: boolean, signal: NodeJS.Signals): Promise<void> {
    if (rm) await this.deleteVm(name);
    else
      process.stderr.write(
        `${name} is still running; delete it with: ${this.config.bin} vm delete ${name}\n`,
      );
    process.exitCode = signal === 'SIGINT' ? EXIT_INTERRUPTED : signalExitCode(signal);
  }

  /**
   * Delete the VM (--rm). A call that was just abandoned may keep it busy for a moment, so a
   * conflict is retried. A second Ctrl-C leaves it be.
   */
  private async deleteVm(name: string): Promise<void> {
    const err = process.stderr;
    let giveUp = false;
    const onSig = (): void => {
      giveUp = true;
    };
    process.on('SIGINT', onSig);
    err.write(`deleting ${name} (--rm) …\n`);
    try {
      // Its disk goes with it, so the guest need not shut down cleanly: vm.delete would give it
      // 10 s first, which a scheduler's SIGTERM-to-SIGKILL window (Slurm's KillWait) may not have.
      // Best effort: a VM that is not running (or busy) is simply deleted below.
      await this.client.vm.kill({ name }, this.op).catch(() => undefined);
      for (let attempt = 0; ; attempt++) {
        try {
          await this.client.vm.delete({ name }, this.op);
          err.write(`deleted ${name}\n`);
          return;
        } catch (e) {
          if (e instanceof ErrorResponse && e.code === 'not_found') return;
          if (e instanceof ErrorResponse && e.code === 'conflict' && attempt < 60 && !giveUp) {
            await new Promise((r) => setTimeout(r, 500));
            continue;
          }
          err.write(
            `error: could not delete ${name}: ${e instanceof Error ? e.message : String(e)}; delete it with: ${this.config.bin} vm delete ${name}\n`,
          );
          return;
        }
      }
    } finally {
      process.off('SIGINT', onSig);
    }
  }
}
