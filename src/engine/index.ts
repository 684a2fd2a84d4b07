// The engine's public surface: the daemon imports from here.
export type {
  Accel,
  DiskSpec,
  DriverName,
  ExitInfo,
  FirecrackerLaunchPlan,
  GuestForward,
  HandleRecord,
  LaunchPlan,
  NetSpec,
  PlanFiles,
  QemuLaunchPlan,
  ReattachOptions,
  StartOptions,
  StateFileOptions,
  VmLaunchSpec,
  VmmApiRequest,
  VmmDriver,
  VmmEvent,
  VmmEventListener,
  VmmHandle,
  VmmStatus,
  VmmStatusDetail,
} from './driver.ts';
export { decodeQmpEvent, describeExit, diskIndexOf, terminatingSignal } from './events.ts';
export { EngineError, isEngineError, type EngineErrorCode } from './errors.ts';
export { silentLogger, type EngineLogger } from './log.ts';
export { readHandles, writeHandles, removeHandles, handlesPath, HANDLES_FILE } from './handles.ts';
export {
  AGENT_PORT_NAME,
  DEFAULT_QEMU_BINARY,
  DEFAULT_TB_SIZE_MIB,
  argvHash,
  buildKernelCmdline,
  buildQemuArgv,
  hostTscKhz,
  prepareQemuPlan,
  qemuFiles,
  qemuOptValue,
} from './qemu-argv.ts';
export {
  QmpClient,
  type QmpEvent,
  type QmpGreeting,
  type QmpStatusInfo,
  type QmpConnectOptions,
} from './qmp.ts';
export { QgaClient, type QgaConnectOptions, type QgaExecOptions, type QgaExecResult } from './qga.ts';
export {
  QemuDriver,
  QemuHandle,
  mapRunState,
  type QemuDriverOptions,
  type QemuHandleOptions,
} from './qemu.ts';
export {
  probeAccel,
  qemuVersion,
  resetAccelMemo,
  PROBE_MARKER,
  type AccelProbeOptions,
  type AccelProbeResult,
} from './accel.ts';
export {
  AGENT_VSOCK_CID,
  buildFirecrackerArgv,
  buildFirecrackerRequests,
  firecrackerBootArgs,
  prepareFirecrackerPlan,
} from './firecracker-api.ts';
export {
  FirecrackerDriver,
  FirecrackerHandle,
  configureAndBoot,
  detectFirecracker,
  firecrackerCall,
  isFirecrackerAvailable,
  type FirecrackerAvailability,
} from './firecracker.ts';
export {
  FakeVmmDriver,
  FakeVmmHandle,
  FakeVmmHost,
  type FakeEventInput,
  type FakeOp,
  type FakeOpName,
} from './fake.ts';
export { buildCpio, busyboxInitramfs, type CpioEntry } from './cpio.ts';
export { validateLaunchSpec, withKernelParams, MAX_UNIX_SOCKET_PATH } from './spec.ts';
export {
  saveState,
  waitIncoming,
  saveStateUri,
  saveErrPath,
  restoreStateUri,
  type SaveStateOptions,
} from './migration.ts';
export { selectEngine, hostEngine, type EngineHost, type EngineSelection } from './select.ts';
