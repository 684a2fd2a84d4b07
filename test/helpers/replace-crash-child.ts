// A daemon's image service in its own process, for image-replace-crash.test.ts: it force-rebuilds
// image `img` in STATE (argv[2]) with the fake builder's tag argv[4] and the real TEST-ONLY crash
// points (src/vm/crash.ts) armed at argv[3], so the process SIGKILLs itself mid-replacement.
import { join } from 'node:path';
import { ImageServiceImpl } from '../../src/daemon/services/image.ts';
import { createLogger } from '../../src/log/logger.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { mintOpId } from '../../src/rpc/context.ts';
import { openStore } from '../../src/store/index.ts';
import { crashPoints } from '../../src/vm/crash.ts';
import { taggedBuild } from './tagged-build.ts';

const [stateDir, point, tag] = process.argv.slice(2);
if (stateDir === undefined || point === undefined || tag === undefined)
  throw new Error('usage: replace-crash-child.ts STATE POINT TAG');

const build = taggedBuild(tag);

const log = createLogger({ name: 'child', stream: process.stderr });
const store = openStore(join(stateDir, 'banger.db'));
const svc = new ImageServiceImpl({
  store,
  ops: new OperationRegistry(log),
  log,
  stateDir,
  cacheDir: join(stateDir, '..', 'cache'),
  build,
  crash: crashPoints(point, log),
});
const opId = mintOpId();
await svc.buildBegin(
  { name: 'img', force: true },
  {
    opId,
    method: 'test',
    startedAt: Date.now(),
    signal: new AbortController().signal,
    log,
  },
);
for (;;) {
  const { operation } = await svc.buildStatus(
    { operation_id: opId },
    {
      opId,
      method: 'test',
      startedAt: Date.now(),
      signal: new AbortController().signal,
      log,
    },
  );
  if (operation.state !== 'running') break;
  await new Promise((r) => setTimeout(r, 5));
}
// Reaching here means the crash point never came.
process.stdout.write('no crash\n');
