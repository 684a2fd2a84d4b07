// Setup file of every vitest run (vitest.config.ts): the declared-codes contract is on
// (BANGER_CHECK_ERROR_CODES=1), and a daemon or root helper served in this worker that answered a
// call with an error code its method does not declare (src/rpc/error-check.ts) fails the test
// during which it happened, whatever that test asserts.
import { afterAll, afterEach } from 'vitest';
import { assertNoUndeclaredCodes } from '../../src/rpc/error-check.ts';

afterEach(assertNoUndeclaredCodes);
afterAll(assertNoUndeclaredCodes);
