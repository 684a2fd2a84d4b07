// A fake bangerd for CLI tests: the real RPC server and framing, with a hand-written dispatcher
// that keeps a few VMs, images and kernels in memory and plays scripted operations (create, build)
// on a clock. Every params object the CLI sends is checked with the generated params validators and
// every result with the result validators, so a CLI or fake drifting from the schema fails loudly.
import type { Server, Socket } from 'node:net';
import { join } from 'node:path';
import { paramValidators, resultValidators } from '../../generated/validators.gen.ts';
import type {
  Image,
  Kernel,
  Operation,
  Step,
  Vm,
  VmCreateBeginParams,
  VmLogsParams,
} from '../../generated/types.gen.ts';
import { createLogger } from '../../src/log/logger.ts';
import type { RpcContext } from '../../src/rpc/context.ts';
import type { HandlerResponse, RequestEnvelope } from '../../src/rpc/envelope.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { listenUnix } from '../../src/rpc/listen.ts';
import { createRpcServer } from '../../src/rpc/server.ts';
import { describeAjvErrors } from '../../src/rpc/validation.ts';
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

  const handlers: Record<string, (ctx: RpcContext, p: Record<string, unknown>) => unknown> = {
    'vm.list': (_c, p) => ({
      vms: [...vms.values()]
        .filter((v) => !p.state || v.state === p.state)
        .sort((a, b) => (a.name < b.name ? -1 : 1)),
    }),
    'vm.show': (_c, p) => ({ vm: vmOr404(p.name as string) }),
    'vm.create.begin': (ctx, raw) => {
      const p = raw as VmCreateBeginParams;
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
    'vm.create.status': (_c, p) => {
      const f = opOr404(p.operation_id as string);
      const vm = f.op.vm ? vms.get(f.op.vm) : undefined;
      return vm ? { operation: f.op, vm } : { operation: f.op };
    },
    'vm.create.cancel': (_c, p) => {
      const f = opOr404(p.operation_id as string);
      if (f.op.state !== 'running')
        throw new ErrorResponse('conflict', `operation ${f.op.id} already ${f.op.state}`);
      f.canceledAt = Date.now();
      advance(f, Date.now());
      return { operation: f.op };
    },
    'vm.start': (_c, p) => {
      const v = vmOr404(p.name as string);
      if (v.state === 'running') throw new ErrorResponse('conflict', `vm "${v.name}" is already running`);
      Object.assign(v, { state: 'running', pid: 4242, accel: 'kvm', boot_count: v.boot_count + 1 });
      return { vm: v };
    },
    'vm.stop': (_c, p) => {
      const v = vmOr404(p.name as string);
      running(v);
      v.state = 'stopped';
      delete v.pid;
      delete v.accel;
      return { vm: v, clean: v.name !== 'stubborn', forced: v.name === 'stubborn' };
    },
    'vm.restart': (_c, p) => {
      const v = vmOr404(p.name as string);
      v.boot_count += 1;
      return { vm: v };
    },
    'vm.kill': (_c, p) => {
      const v = vmOr404(p.name as string);
      running(v);
      v.state = 'stopped';
      delete v.pid;
      delete v.accel;
      return { vm: v };
    },
    'vm.delete': (_c, p) => {
      const v = vmOr404(p.name as string);
      vms.delete(v.name);
      return { name: v.name, deleted: true };
    },
    'vm.set': (_c, p) => {
      const v = vmOr404(p.name as string);
      if (v.state !== 'stopped') throw new ErrorResponse('conflict', `vm "${v.name}" must be stopped`);
      if (typeof p.vcpus === 'number') v.vcpus = p.vcpus;
      if (typeof p.memory_mib === 'number') v.memory_mib = p.memory_mib;
      return { vm: v };
    },
    'vm.ssh': (_c, p) => {
      const v = vmOr404(p.name as string);
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
    'vm.stats': (_c, p) => {
      const v = vmOr404(p.name as string);
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
    'vm.health': (_c, p) => {
      const v = vmOr404(p.name as string);
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
    'vm.prune': (_c, p) => {
      const stopped = [...vms.values()].filter((v) => v.state === 'stopped' || v.state === 'error');
      if (!p.dry_run) for (const v of stopped) vms.delete(v.name);
      return {
        deleted: stopped.map((v) => v.name),
        kept: [...vms.values()].filter((v) => !stopped.includes(v)).map((v) => v.name),
      };
    },
    'image.build.begin': (ctx, p) => {
      const name = (p.name as string | undefined) ?? 'debian-bookworm';
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
    'image.build.status': (_c, p) => {
      const f = opOr404(p.operation_id as string);
      const image = f.op.image ? images.get(f.op.image) : undefined;
      return image && f.op.state === 'succeeded' ? { operation: f.op, image } : { operation: f.op };
    },
    'image.build.cancel': (_c, p) => {
      const f = opOr404(p.operation_id as string);
      if (f.op.state !== 'running')
        throw new ErrorResponse('conflict', `operation ${f.op.id} already ${f.op.state}`);
      f.canceledAt = Date.now();
      advance(f, Date.now());
      return { operation: f.op };
    },
    'image.list': () => ({ images: [...images.values()] }),
    'image.show': (_c, p) => {
      const i = images.get(p.name as string);
      if (!i) throw new ErrorResponse('not_found', `image "${String(p.name)}" not found`);
      return { image: i };
    },
    'image.import': (_c, p) => {
      const img = fakeImage(p.name as string, {
        source: 'imported',
        default: p.make_default === true,
        rootfs_path: `/state/images/${String(p.name)}/rootfs.ext4`,
      });
      delete img.recipe_hash;
      images.set(img.name, img);
      return { image: img };
    },
    'image.delete': (_c, p) => {
      const i = images.get(p.name as string);
      if (!i) throw new ErrorResponse('not_found', `image "${String(p.name)}" not found`);
      if (i.used_by.length > 0)
        throw new ErrorResponse('conflict', `image "${i.name}" is used by ${i.used_by.join(', ')}`);
      images.delete(i.name);
      return { name: i.name, deleted: true };
    },
    'image.promote': (_c, p) => {
      const i = images.get(p.name as string);
      if (!i) throw new ErrorResponse('not_found', `image "${String(p.name)}" not found`);
      for (const o of images.values()) o.default = o === i;
      return { image: i };
    },
    'kernel.list': () => ({ kernels: [...kernels.values()] }),
    'kernel.show': (_c, p) => {
      const k = kernels.get(p.name as string);
      if (!k) throw new ErrorResponse('not_found', `kernel "${String(p.name)}" not found`);
      return { kernel: k };
    },
    'kernel.import': (_c, p) => {
      const k: Kernel = {
        id: 'aaaabbbbcccc',
        name: p.name as string,
        version: (p.version as string | undefined) ?? 'unknown',
        kernel_path: `/state/kernels/${String(p.name)}/vmlinuz`,
        source: 'imported',
        created_at: T0,
        used_by: [],
      };
      if (p.initrd) k.initrd_path = `/state/kernels/${String(p.name)}/initrd.img`;
      kernels.set(k.name, k);
      return { kernel: k };
    },
    'kernel.delete': (_c, p) => {
      const k = kernels.get(p.name as string);
      if (!k) throw new ErrorResponse('not_found', `kernel "${String(p.name)}" not found`);
      if (k.used_by.length > 0)
        throw new ErrorResponse('conflict', `kernel "${k.name}" is booted by ${k.used_by.join(', ')}`);
      kernels.delete(k.name);
      return { name: k.name, deleted: true };
    },
  };

  const consoleLog =
    '[    0.000000] Linux version 6.1.0-28-cloud-amd64\nWelcome to Debian!\ncalm-otter login: ';

  const dispatch = async (ctx: RpcContext, req: RequestEnvelope): Promise<HandlerResponse> => {
    const params = (req.params ?? {}) as Record<string, unknown>;
    calls.push({ method: req.method, params });
    const pv = (paramValidators as Record<string, ((p: unknown) => boolean) & { errors?: unknown }>)[
      req.method
    ];
    if (pv && !pv(params)) {
      throw new ErrorResponse('bad_request', `invalid params: ${describeAjvErrors(pv.errors as never)}`);
    }
    if (req.method === 'vm.logs') {
      const p = params as unknown as VmLogsParams;
      const v = vmOr404(p.name);
      const tail = p.tail_bytes ?? 65536;
      const data = consoleLog.slice(-tail);
      const final = { name: v.name, data: '', truncated: false, path: `${v.vm_dir}/serial.log` };
      if (!p.follow) {
        return {
          ok: true,
          result: { ...final, data, truncated: data.length < consoleLog.length },
          op_id: ctx.opId,
        };
      }
      async function* frames(): AsyncIterable<unknown> {
        yield { data };
        for (const line of ['root\n', 'Password: \n', 'Linux calm-otter 6.1.0\n']) {
          await new Promise((r) => setTimeout(r, 50));
          yield { data: line };
        }
        if (v.name !== 'calm-otter') return;
        // calm-otter keeps running: the stream only ends when the client goes away. The server
        // notices a vanished client when a write fails, so keep writing (empty) frames.
        while (!ctx.signal.aborted) {
          await new Promise((r) => setTimeout(r, 100));
          yield { data: '' };
        }
      }
      return { stream: frames(), final: () => ({ ...final, data: 'bye\n' }) };
    }
    const h = handlers[req.method];
    if (!h) throw new ErrorResponse('unknown_method', `no method ${req.method}`);
    const result = h(ctx, params);
    const rv = (resultValidators as Record<string, ((r: unknown) => boolean) & { errors?: unknown }>)[
      req.method
    ];
    if (rv && !rv(result)) {
      throw new Error(
        `fake daemon bug: invalid ${req.method} result: ${describeAjvErrors(rv.errors as never)}`,
      );
    }
    return { ok: true, result, op_id: ctx.opId };
  };

  const server: Server = createRpcServer({
    log: createLogger({ name: 'fake-bangerd', stream: new MemoryLog() }),
    summaryPrefix: 'rpc',
    dispatcher: { dispatch },
  });
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
