// vm.create.plan: the spec vm.create.begin would create, resolved without touching anything.
// `banger vm run` prints it first, and `--dry-run` prints nothing else.
import type { NetworkMode, VmCreatePlanParams, VmCreatePlanResult } from '../../generated/types.gen.ts';
import { EgressRuleError, parseEgress, type EgressPolicy } from '../egress/rules.ts';
import { planVmSecrets, SecretError } from '../egress/secrets.ts';
import { VmError, vmNotFound } from './errors.ts';
import type { Store } from '../store/index.ts';
import { randomVmName, validateVmName } from './names.ts';
import { parseSize } from './sizes.ts';

/** The smallest root disk a VM may have (vm.create.begin refuses less). */
export const MIN_DISK_BYTES = 512 * 1024 * 1024;

export interface PlanDeps {
  store: { images: Pick<Store['images'], 'getByName' | 'getDefault'> };
  vmDefaults: { vcpus: number; memory_mib: number; disk_size: string; egress?: string };
  /** The image built on first use when there is no default image. */
  defaultImageName: string;
  /** A name is taken by a VM row or by a create that has not recorded its row yet. */
  nameTaken: (name: string) => boolean;
  /** The network mode vm.create.begin would give the VM (its errors are vm.create.begin's). */
  chooseNetwork: (requested: NetworkMode | undefined, nat: boolean) => Promise<NetworkMode>;
  /** Whether a secret is set (the secret store); without it any `secrets` param is refused. */
  secretExists?: (name: string) => Promise<boolean>;
}

/**
 * Resolve a create request the way vm.create.begin does: the same checks in the same order and
 * the same errors (bad_request, already_exists, not_found). Read-only.
 */
export async function planCreate(d: PlanDeps, p: VmCreatePlanParams): Promise<VmCreatePlanResult> {
  const generated = p.name === undefined;
  const name = p.name !== undefined ? validateVmName(p.name) : randomVmName(d.nameTaken);
  if (d.nameTaken(name)) throw new VmError('exists', `vm "${name}" already exists`);
  const network = await d.chooseNetwork(p.network, p.nat ?? false);
  let image: string;
  let imageReady: boolean;
  if (p.image !== undefined) {
    if (!d.store.images.getByName(p.image)) throw vmNotFound(`image "${p.image}"`);
    image = p.image;
    imageReady = true;
  } else {
    const def = d.store.images.getDefault() ?? d.store.images.getByName(d.defaultImageName);
    image = def?.name ?? d.defaultImageName;
    imageReady = def !== undefined;
  }
  const egress = planEgress(p.egress ?? d.vmDefaults.egress ?? 'all');
  const secrets = await planSecrets(p.secrets ?? [], d.secretExists ?? (() => Promise.resolve(false)));
  const diskSizeBytes = parseSize(p.disk_size ?? d.vmDefaults.disk_size, 'disk size');
  if (diskSizeBytes < MIN_DISK_BYTES) throw new VmError('invalid', 'disk size must be at least 512M');
  return {
    name,
    name_generated: generated,
    image,
    image_ready: imageReady,
    vcpus: p.vcpus ?? d.vmDefaults.vcpus,
    memory_mib: p.memory_mib ?? d.vmDefaults.memory_mib,
    disk_size_bytes: diskSizeBytes,
    network,
    nat: p.nat ?? false,
    egress,
    ...(secrets.length > 0 ? { secrets } : {}),
  };
}

/** The `secrets` param checked (src/egress/secrets.ts), its errors as this layer's. */
async function planSecrets(
  texts: readonly string[],
  exists: (name: string) => Promise<boolean>,
): Promise<{ name: string; hosts: string[] }[]> {
  try {
    return await planVmSecrets(texts, exists);
  } catch (err) {
    if (err instanceof SecretError)
      throw new VmError(err.code === 'not_found' ? 'not_found' : 'invalid', err.message);
    throw err;
  }
}

/** A policy text (the param's or the config default's) parsed, or `invalid` with the parser's words. */
export function planEgress(text: string): EgressPolicy {
  try {
    return parseEgress(text);
  } catch (err) {
    if (err instanceof EgressRuleError) throw new VmError('invalid', err.message);
    throw err;
  }
}
