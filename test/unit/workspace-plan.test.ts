// vm.create.plan: the spec vm.create.begin would create, with begin's defaults and errors.
import { describe, expect, it } from 'vitest';
import { ErrorResponse, toErrorResponse } from '../../src/rpc/errors.ts';
import type { ImageRow } from '../../src/store/index.ts';
import { planCreate, type PlanDeps } from '../../src/vm/plan.ts';

const image = { name: 'debian-bookworm' } as ImageRow;

function deps(over: Partial<PlanDeps> = {}, images: ImageRow[] = [image], def?: ImageRow): PlanDeps {
  return {
    store: {
      images: {
        getByName: (n: string) => images.find((i) => i.name === n),
        getDefault: () => def,
      },
    },
    vmDefaults: { vcpus: 2, memory_mib: 1024, disk_size: '4G' },
    defaultImageName: 'debian-bookworm',
    nameTaken: (n) => n === 'taken',
    chooseNetwork: async (req) => req ?? 'user',
    ...over,
  };
}

async function fails(p: Promise<unknown>): Promise<ErrorResponse> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  // The VM layer's error (or the network's stub below), as the wire sees it.
  return toErrorResponse(e, 'op-000000');
}

describe('planCreate', () => {
  it('fills in the defaults and a free random name', async () => {
    const p = await planCreate(deps(), {});
    expect(p).toMatchObject({
      name_generated: true,
      image: 'debian-bookworm',
      image_ready: true,
      vcpus: 2,
      memory_mib: 1024,
      disk_size_bytes: 4 * 1024 ** 3,
      network: 'user',
      nat: false,
    });
    expect(p.name).toMatch(/^[a-z]+-[a-z]+(-\d+)?$/);
  });

  it('takes what is given; a named default image wins; a missing default image will be built', async () => {
    const other = { name: 'custom' } as ImageRow;
    const p = await planCreate(deps({}, [image, other], other), {
      name: 'dev',
      vcpus: 4,
      memory_mib: 4096,
      disk_size: '20G',
      network: 'bridge',
      nat: true,
    });
    expect(p).toMatchObject({
      name: 'dev',
      name_generated: false,
      image: 'custom',
      vcpus: 4,
      memory_mib: 4096,
      disk_size_bytes: 20 * 1024 ** 3,
      network: 'bridge',
      nat: true,
    });
    const unbuilt = await planCreate(deps({}, []), {});
    expect(unbuilt).toMatchObject({ image: 'debian-bookworm', image_ready: false });
  });

  it('refuses what vm.create.begin refuses, with the same codes', async () => {
    expect((await fails(planCreate(deps(), { name: 'Bad_Name' }))).code).toBe('bad_request');
    expect((await fails(planCreate(deps(), { name: 'taken' }))).code).toBe('already_exists');
    expect((await fails(planCreate(deps(), { image: 'nope' }))).code).toBe('not_found');
    expect((await fails(planCreate(deps(), { disk_size: '100M' }))).message).toMatch(/at least 512M/);
    expect((await fails(planCreate(deps(), { disk_size: '4X' }))).code).toBe('bad_request');
    const noBridge = deps({
      chooseNetwork: async () => {
        throw new ErrorResponse('bad_request', 'bridge networking needs the root helper');
      },
    });
    expect((await fails(planCreate(noBridge, { network: 'bridge' }))).message).toMatch(/root helper/);
  });
});
