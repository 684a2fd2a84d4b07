// The run defaults of a VM's commands (`vm exec`, `vm ssh`): its workspace directory and its
// image's config (Env, WorkingDir, User), read through vm.show and image.show so the wire Vm need
// not repeat the image's config.
import type { BangerClient } from '../../generated/client.gen.ts';
import { ErrorResponse } from '../rpc/errors.ts';
import { runDefaults, type RunDefaults } from './devcontainer-run.ts';
import type { ImageRunConfig } from './guest-command.ts';

export interface VmRunDefaults extends RunDefaults {
  /** The VM's workspace directory, when it has one. */
  workspace?: string;
}

export async function vmRunDefaults(client: BangerClient, vmName: string): Promise<VmRunDefaults> {
  const { vm } = await client.vm.show({ name: vmName });
  let cfg: ImageRunConfig | undefined;
  try {
    cfg = (await client.image.show({ name: vm.image })).image.oci_config;
  } catch (e) {
    // An image deleted since (vm records keep the name): no defaults to apply.
    if (!(e instanceof ErrorResponse && e.code === 'not_found')) throw e;
  }
  const out: VmRunDefaults = runDefaults(cfg, undefined);
  if (vm.workspace) out.workspace = vm.workspace.guest_path;
  return out;
}
