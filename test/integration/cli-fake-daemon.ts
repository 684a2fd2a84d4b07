// A fake bangerd for CLI tests: the real RPC server, framing and generated dispatch table (params
// validated by the generated validators, declared error codes checked), over typed implementations
// of the generated service interfaces that keep a few VMs, images and kernels in memory and play
// scripted operations (create, build) on a clock. A method added to or changed in the schema is a
// compile error here, and every result is checked with the result validators, so neither the CLI
// nor this fake can drift from the schema.
import type { Server, Socket } from 'node:net';
import { join } from 'node:path';
import type {
  DaemonService,
  ImageService,
  KernelService,
  OpService,
  SecretService,
  Services,
  VmService,
} from '../../generated/handlers.gen.ts';
import { PROTOCOL_VERSION } from '../../generated/methods.gen.ts';
import type { Image, Kernel, Operation, Step, Vm, VmLogsFrame } from '../../generated/types.gen.ts';
import { resultValidators } from '../../generated/validators.gen.ts';
import { Daemon } from '../../src/daemon/daemon.ts';
import { parseEgress } from '../../src/egress/rules.ts';
import { createLogger } from '../../src/log/logger.ts';
import { isStreamResponse, type HandlerResponse } from '../../src/rpc/envelope.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { createRpcServer, type Dispatcher } from '../../src/rpc/server.ts';
import { describeAjvErrors } from '../../src/rpc/validation.ts';
import { BANGER_VERSION } from '../../src/version.ts';
import { MemoryLog } from '../helpers/logs.ts';

const T0 = '2026-01-14T09:31:02.120Z';

export function fakeVm(name: string, over: Partial<Vm> = {}): Vm {
  const id = Buffer.from(name.padEnd(6, 'x').slice(0, 6)).toString('hex');
  return {
    id,
    name,
    state: 'running',
    image: 'debian-bookworm',
    vcpus: 2,
    memory_mib: 1024,
    disk_size_bytes: 4 * 1024 ** 3,
    network: { mode: 'user', mac: '52:54:00:a1:b2:c3', ssh_host: '127.0.0.1', ssh_port: 42022 },
    nat: false,
    egress: { mode: 'all', rules: [] },
    secrets: [],
    pid: 41234,
    accel: 'kvm',
    boot_count: 1,
    created_at: T0,
    updated_at: T0,
    last_started_at: T0,
    vm_dir: `/state/vms/${id}`,
    ...over,
  };
}

export function fakeImage(name: string, over: Partial<Image> = {}): Image {
  return {
    id: '0c1d2e3f4a5b',
    name,
    kernel: name,
    kernel_version: '6.1.0-28-cloud-amd64',
    rootfs_path: `/state/images/${name}/rootfs.ext4`,
    size_bytes: 2 * 1024 ** 3,
    source: 'built',
    default: true,
    recipe_hash: '5f0c2a',
    created_at: T0,
    used_by: [],
    ...over,
  };
}

/** One scripted step: how long it runs, and whether it fails (with detail and error). */
interface ScriptStep {
  name: string;
  ms: number;
  detail?: string;
  fail?: { code: ErrorResponse['code']; message: string };
}

interface FakeOp {
  op: Operation;
  script: ScriptStep[];
  begunAt: number;
  canceledAt?: number;
  onSuccess: () => void;
}

export interface FakeDaemon {
  sock: string;
  vms: Map<string, Vm>;
  images: Map<string, Image>;
  kernels: Map<string, Kernel>;
  /** Every call the CLI made, in order. */
  calls: { method: string; params: unknown }[];
  close(): Promise<void>;
}

const CREATE_STEPS: ScriptStep[] = [
  { name: 'resolve_image', ms: 40 },
  { name: 'prepare_disk', ms: 120 },
  { name: 'prepare_seed', ms: 60 },
  { name: 'network', ms: 60 },
  { name: 'boot', ms: 200 },
  { name: 'wait_ssh', ms: 300 },
];

const BUILD_STEPS: ScriptStep[] = [
  { name: 'kernel.download', ms: 150 },
  { name: 'rootfs.bootstrap', ms: 400, detail: 'unpacking 120/300 packages' },
  { name: 'initramfs', ms: 100 },
  { name: 'record', ms: 30 },
];

/** The operation as a poll at time `now` would see it. */
function advance(f: FakeOp, now: number): void {
  const op = f.op;
  if (op.state !== 'running') return;
  const until = f.canceledAt ?? now;
  let t = f.begunAt;
  op.steps = [];
  for (const s of f.script) {
    if (until < t) break;
    const step: Step = { name: s.name, state: 'running', started_at: new Date(t).toISOString() };
    op.steps.push(step);
    op.current_step = s.name;
    if (s.detail) step.detail = s.detail;
    if (until < t + s.ms) break;
    step.duration_ms = s.ms;
    if (s.fail) {
      step.state = 'failed';
      step.detail = s.fail.message;
      for (const done of op.steps) if (done.state === 'done') done.state = 'undone';
      op.state = 'failed';
      op.error = { code: s.fail.code, message: s.fail.message };
      op.ended_at = new Date(t + s.ms).toISOString();
      delete op.current_step;
      return;
    }
    step.state = 'done';
    delete step.detail;
    t += s.ms;
  }
  if (f.canceledAt !== undefined) {
    for (const s of op.steps)
      s.state = s.state === 'done' ? 'undone' : s.state === 'running' ? 'failed' : s.state;
    op.state = 'canceled';
    op.error = { code: 'canceled', message: 'canceled by user' };
    op.ended_at = new Date(f.canceledAt).toISOString();
    delete op.current_step;
    return;
  }
  if (op.steps.length === f.script.length && op.steps.every((s) => s.state === 'done')) {
    op.state = 'succeeded';
    op.ended_at = new Date(t).toISOString();
    delete op.current_step;
    f.onSuccess();
  }
}

export async function startFakeDaemon(dir: string): Promise<FakeDaemon> {
  const vms = new Map<string, Vm>([
    ['calm-otter', fakeVm('calm-otter')],
    ['old-otter', fakeVm('old-otter', { state: 'stopped', pid: undefined, accel: undefined })],
  ]);
  for (const v of vms.values()) if (v.pid === undefined) delete v.pid;
  for (const v of vms.values()) if (v.accel === undefined) delete v.accel;
  const images = new Map<string, Image>([['debian-bookworm', fakeImage('debian-bookworm')]]);
  const kernels = new Map<string, Kernel>([
    [
      'debian-bookworm',
      {
        id: '9a8b7c6d5e4f',
        name: 'debian-bookworm',
        version: '6.1.0-28-cloud-amd64',
        kernel_path: '/state/kernels/debian-bookworm/vmlinuz',
        initrd_path: '/state/kernels/debian-bookworm/initrd.img',
        source: 'built',
        created_at: T0,
        used_by: ['debian-bookworm'],
      },
    ],
  ]);
  const ops = new Map<string, FakeOp>();
  const calls: { method: string; params: unknown }[] = [];

  const vmOr404 = (name: string): Vm => {
    const v = vms.get(name);
    if (!v) throw new ErrorResponse('not_found', `vm "${name}" not found`);
    return v;
  };
  const running = (v: Vm): void => {
    if (v.state !== 'running')
      throw new ErrorResponse('not_running', `vm "${v.name}" is not running (${v.state})`);
  };
  const opOr404 = (id: string): FakeOp => {
    const f = ops.get(id);
    if (!f) throw new ErrorResponse('not_found', `operation ${id} not found`);
    advance(f, Date.now());
    return f;
  };
  const imageOr404 = (name: string): Image => {
    const i = images.get(name);
    if (!i) throw new ErrorResponse('not_found', `image "${name}" not found`);
    return i;
  };
  const kernelOr404 = (name: string): Kernel => {
    const k = kernels.get(name);
    if (!k) throw new ErrorResponse('not_found', `kernel "${name}" not found`);
    return k;
  };
  /** A method no CLI test needs yet: a universal code, so the declared-codes check stays quiet. */
  const notFaked = (method: string) => async (): Promise<never> => {
    throw new ErrorResponse('operation_failed', `${method} is not in the fake daemon`);
  };

  const consoleLog =
    '[    0.000000] Linux version 6.1.0-28-cloud-amd64\nWelcome to Debian!\ncalm-otter login: ';

  const vm: VmService = {
    create: {
      async begin(p, ctx) {
        const name = p.name ?? 'brave-heron';
        if (vms.has(name)) throw new ErrorResponse('already_exists', `vm "${name}" already exists`);
        const script = CREATE_STEPS.map((s) => ({ ...s }));
        if (p.image !== undefined && !images.has(p.image)) {
          script[0] = { ...script[0]!, fail: { code: 'not_found', message: `image "${p.image}" not found` } };
        }
        if (name.startsWith('boot-fails')) {
          script[4] = {
            ...script[4]!,
            fail: { code: 'operation_failed', message: 'qemu exited with status 1' },
          };
        }
        if (name.startsWith('slow')) script[5] = { ...script[5]!, ms: 60_000 };
        const f: FakeOp = {
          op: {
            id: ctx.opId,
            kind: 'vm.create',
            method: 'vm.create.begin',
            state: 'running',
            started_at: new Date().toISOString(),
            vm: name,
            steps: [],
          },
          script,
          begunAt: Date.now(),
          onSuccess: () => {
            vms.set(
              name,
              fakeVm(name, {
                vcpus: p.vcpus ?? 2,
                memory_mib: p.memory_mib ?? 1024,
                ...(p.start === false ? { state: 'stopped' as const } : {}),
              }),
            );
          },
        };
        ops.set(ctx.opId, f);
        return { operation_id: ctx.opId, name };
      },
      async status(p) {
        const f = opOr404(p.operation_id);
        const v = f.op.vm ? vms.get(f.op.vm) : undefined;
        return v ? { operation: f.op, vm: v } : { operation: f.op };
      },
      async cancel(p) {
        const f = opOr404(p.operation_id);
        if (f.op.state !== 'running')
          throw new ErrorResponse('conflict', `operation ${f.op.id} already ${f.op.state}`);
        f.canceledAt = Date.now();
        advance(f, Date.now());
        return { operation: f.op };
      },
      // What vm run asks first: the spec as the daemon would resolve it (no checks beyond the name).
      async plan(p) {
        const name = p.name ?? 'brave-heron';
        if (vms.has(name)) throw new ErrorResponse('already_exists', `vm "${name}" already exists`);
        return {
          name,
          name_generated: p.name === undefined,
          image: p.image ?? 'debian-bookworm',
          image_ready: true,
          vcpus: p.vcpus ?? 2,
          memory_mib: p.memory_mib ?? 1024,
          disk_size_bytes: 4 * 1024 ** 3,
          network: p.network ?? 'user',
          nat: p.nat === true,
          egress: { mode: 'all', rules: [] },
        };
      },
    },
    workspace: {
      prepare: notFaked('vm.workspace.prepare'),
      export: notFaked('vm.workspace.export'),
    },
    async list(p) {
      return {
        vms: [...vms.values()]
          .filter((v) => !p.state || v.state === p.state)
          .sort((a, b) => (a.name < b.name ? -1 : 1)),
      };
    },
    async show(p) {
      return { vm: vmOr404(p.name) };
    },
    async start(p) {
      const v = vmOr404(p.name);
      if (v.state === 'running') throw new ErrorResponse('conflict', `vm "${v.name}" is already running`);
      Object.assign(v, { state: 'running', pid: 4242, accel: 'kvm', boot_count: v.boot_count + 1 });
      return { vm: v };
    },
    async stop(p) {
      const v = vmOr404(p.name);
      running(v);
      v.state = 'stopped';
      delete v.pid;
      delete v.accel;
      return { vm: v, clean: v.name !== 'stubborn', forced: v.name === 'stubborn' };
    },
    async restart(p) {
      const v = vmOr404(p.name);
      v.boot_count += 1;
      return { vm: v };
    },
    async kill(p) {
      const v = vmOr404(p.name);
      running(v);
      v.state = 'stopped';
      delete v.pid;
      delete v.accel;
      return { vm: v };
    },
    pause: notFaked('vm.pause'),
    fork: {
      begin: notFaked('vm.fork.begin'),
      status: notFaked('vm.fork.status'),
      cancel: notFaked('vm.fork.cancel'),
    },
    resume: notFaked('vm.resume'),
    async touch(p) {
      return { vm: vmOr404(p.name) };
    },
    async delete(p) {
      const v = vmOr404(p.name);
      vms.delete(v.name);
      return { name: v.name, deleted: true };
    },
    async set(p) {
      const v = vmOr404(p.name);
      if (p.egress !== undefined) {
        // Egress changes on any VM: live here unless the VM is stopped (the daemon decides more).
        v.egress = parseEgress(p.egress);
        v.egress_op_id = 'op-0123456789ab';
        return v.state === 'stopped'
          ? { vm: v, egress_applied: 'next_start', egress_note: `vm "${v.name}" is not running` }
          : { vm: v, egress_applied: 'live' };
      }
      if (v.state !== 'stopped') throw new ErrorResponse('conflict', `vm "${v.name}" must be stopped`);
      if (p.vcpus !== undefined) v.vcpus = p.vcpus;
      if (p.memory_mib !== undefined) v.memory_mib = p.memory_mib;
      return { vm: v };
    },
    async ssh(p) {
      const v = vmOr404(p.name);
      running(v);
      return {
        name: v.name,
        host: '127.0.0.1',
        port: 42022,
        user: 'root',
        identity_file: '/state/ssh/id_ed25519',
        known_hosts_file: '/state/ssh/known_hosts',
        host_key_alias: `${v.name}.vm`,
        ssh_options: ['StrictHostKeyChecking=yes', `HostKeyAlias=${v.name}.vm`],
      };
    },
    async stats(p) {
      const v = vmOr404(p.name);
      return {
        name: v.name,
        state: v.state,
        ...(v.state === 'running'
          ? { pid: 41234, cpu_seconds: 12.5, cpu_percent: 3.1, rss_bytes: 352321536, uptime_ms: 60000 }
          : {}),
        disk_allocated_bytes: 52428800,
        disk_virtual_bytes: v.disk_size_bytes,
      };
    },
    async health(p) {
      const v = vmOr404(p.name);
      const up = v.state === 'running';
      return {
        name: v.name,
        state: v.state,
        kernel_up: up,
        userspace_up: up,
        ssh_ready: up,
        checked_at: new Date().toISOString(),
      };
    },
    async prune(p) {
      const stopped = [...vms.values()].filter((v) => v.state === 'stopped' || v.state === 'error');
      if (!p.dry_run) for (const v of stopped) vms.delete(v.name);
      return {
        deleted: stopped.map((v) => v.name),
        kept: [...vms.values()].filter((v) => !stopped.includes(v)).map((v) => v.name),
      };
    },
    ports: notFaked('vm.ports'),
    async egress(p) {
      const v = vmOr404(p.name);
      // One denial for every VM: enough for the CLI's table and --json.
      const events = [
        {
          time: T0,
          vm: v.name,
          verdict: 'deny' as const,
          proto: 'http' as const,
          host: 'example.com',
          port: 443,
          reason: 'no rule allows example.com:443',
          op_id: 'op-3f9a1c07b2d4',
        },
      ].slice(-(p.limit ?? 100));
      return { result: { name: v.name, egress: v.egress, events } };
    },
    async logs(p, ctx) {
      const v = vmOr404(p.name);
      const tail = p.tail_bytes ?? 65536;
      const data = consoleLog.slice(-tail);
      const result = { name: v.name, data: '', truncated: false, path: `${v.vm_dir}/serial.log` };
      if (!p.follow) return { result: { ...result, data, truncated: data.length < consoleLog.length } };
      async function* frames(): AsyncIterable<VmLogsFrame> {
        yield { data };
        for (const line of ['root\n', 'Password: \n', 'Linux calm-otter 6.1.0\n']) {
          await new Promise((r) => setTimeout(r, 50));
          yield { data: line };
        }
        if (v.name !== 'calm-otter') return;
        // calm-otter keeps running: the stream only ends when the client goes away (the server
        // aborts the call's signal then).
        while (!ctx.signal.aborted) {
          await new Promise((r) => setTimeout(r, 100));
          yield { data: '' };
        }
      }
      return { frames: frames(), result: { ...result, data: 'bye\n' } };
    },
  };

  const image: ImageService = {
    build: {
      async begin(p, ctx) {
        const name = p.name ?? 'debian-bookworm';
        const script = BUILD_STEPS.map((s) => ({ ...s }));
        if (name === 'broken') {
          script[1] = {
            ...script[1]!,
            fail: { code: 'operation_failed', message: 'debootstrap failed: exit status 1' },
          };
        }
        const f: FakeOp = {
          op: {
            id: ctx.opId,
            kind: 'image.build',
            method: 'image.build.begin',
            state: 'running',
            started_at: new Date().toISOString(),
            image: name,
            steps: [],
          },
          script,
          begunAt: Date.now(),
          onSuccess: () => {
            images.set(
              name,
              fakeImage(name, { default: p.make_default === true || name === 'debian-bookworm' }),
            );
          },
        };
        ops.set(ctx.opId, f);
        return { operation_id: ctx.opId, name };
      },
      async status(p) {
        const f = opOr404(p.operation_id);
        const i = f.op.image ? images.get(f.op.image) : undefined;
        return i && f.op.state === 'succeeded' ? { operation: f.op, image: i } : { operation: f.op };
      },
      async cancel(p) {
        const f = opOr404(p.operation_id);
        if (f.op.state !== 'running')
          throw new ErrorResponse('conflict', `operation ${f.op.id} already ${f.op.state}`);
        f.canceledAt = Date.now();
        advance(f, Date.now());
        return { operation: f.op };
      },
    },
    warm: { begin: notFaked('image.warm.begin'), status: notFaked('image.warm.status') },
    pull: {
      begin: notFaked('image.pull.begin'),
      status: notFaked('image.pull.status'),
      cancel: notFaked('image.pull.cancel'),
    },
    cache: { prune: notFaked('image.cache.prune') },
    async list() {
      return { images: [...images.values()] };
    },
    async show(p) {
      return { image: imageOr404(p.name) };
    },
    async import(p) {
      const img = fakeImage(p.name, {
        source: 'imported',
        default: p.make_default === true,
        rootfs_path: `/state/images/${p.name}/rootfs.ext4`,
      });
      delete img.recipe_hash;
      images.set(img.name, img);
      return { image: img };
    },
    async delete(p) {
      const i = imageOr404(p.name);
      if (i.used_by.length > 0)
        throw new ErrorResponse('conflict', `image "${i.name}" is used by ${i.used_by.join(', ')}`);
      images.delete(i.name);
      return { name: i.name, deleted: true };
    },
    async promote(p) {
      const i = imageOr404(p.name);
      for (const o of images.values()) o.default = o === i;
      return { image: i };
    },
  };

  const kernel: KernelService = {
    async list() {
      return { kernels: [...kernels.values()] };
    },
    async show(p) {
      return { kernel: kernelOr404(p.name) };
    },
    async import(p) {
      const k: Kernel = {
        id: 'aaaabbbbcccc',
        name: p.name,
        version: p.version ?? 'unknown',
        kernel_path: `/state/kernels/${p.name}/vmlinuz`,
        source: 'imported',
        created_at: T0,
        used_by: [],
      };
      if (p.initrd) k.initrd_path = `/state/kernels/${p.name}/initrd.img`;
      kernels.set(k.name, k);
      return { kernel: k };
    },
    async delete(p) {
      const k = kernelOr404(p.name);
      if (k.used_by.length > 0)
        throw new ErrorResponse('conflict', `kernel "${k.name}" is booted by ${k.used_by.join(', ')}`);
      kernels.delete(k.name);
      return { name: k.name, deleted: true };
    },
    catalog: notFaked('kernel.catalog'),
    pull: notFaked('kernel.pull'),
  };

  const daemon: DaemonService = {
    status: notFaked('daemon.status'),
    operations: { list: notFaked('daemon.operations.list') },
  };
  const op: OpService = { list: notFaked('op.list'), show: notFaked('op.show'), trace: notFaked('op.trace') };
  // Secrets: names and times only; the value is kept so a test can see what the CLI sent.
  const secretValues = new Map<string, string>();
  const secret: SecretService = {
    async set(p) {
      const created = !secretValues.has(p.name);
      secretValues.set(p.name, p.value);
      return { name: p.name, created };
    },
    async list() {
      return {
        secrets: [...secretValues.keys()].sort().map((name) => ({ name, updated_at: T0, used_by: [] })),
      };
    },
    async rm(p) {
      if (!secretValues.delete(p.name)) throw new ErrorResponse('not_found', `secret ${p.name} not found`);
      return { name: p.name, deleted: true };
    },
  };
  const services: Services = {
    async ping() {
      return { pong: true, version: BANGER_VERSION, protocol_version: PROTOCOL_VERSION };
    },
    shutdown: notFaked('shutdown'),
    daemon,
    vm,
    image,
    kernel,
    op,
    secret,
  };

  const log = createLogger({ name: 'fake-bangerd', stream: new MemoryLog() });
  const table = new Daemon(log, services);
  /** A result the schema refuses is the fake's bug: answer operation_failed, loudly. */
  const checked = (method: string, result: unknown): unknown => {
    const rv = (resultValidators as Record<string, ((r: unknown) => boolean) & { errors?: unknown }>)[method];
    if (rv && !rv(result))
      throw new Error(`fake daemon bug: invalid ${method} result: ${describeAjvErrors(rv.errors as never)}`);
    return result;
  };
  const dispatcher: Dispatcher = {
    async dispatch(ctx, req): Promise<HandlerResponse> {
      calls.push({ method: req.method, params: req.params ?? {} });
      const r = await table.dispatch(ctx, req);
      if (isStreamResponse(r)) return { stream: r.stream, final: () => checked(req.method, r.final()) };
      if (r.ok) checked(req.method, r.result);
      return r;
    },
  };

  const server: Server = createRpcServer({ log, summaryPrefix: 'rpc', dispatcher });
  const sockets = new Set<Socket>();
  server.on('connection', (c: Socket) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
  });
  const sock = join(dir, 'fake.sock');
  await listenUnix(server, sock);
  return {
    sock,
    vms,
    images,
    kernels,
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const c of sockets) c.destroy();
      }),
  };
}
