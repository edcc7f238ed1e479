/**
 * `credential: passthrough`: the caller's own Authorization header goes upstream unchanged. Only
 * with `gateway.allow_passthrough: true`, and a warning at load: the upstream then holds a token
 * it could replay elsewhere within its audience.
 *
 * @module
 */
import { readHeader } from '../../../core/verify/extract.ts';
import type { Mutator } from './mutator.ts';

export function passthroughMutator(): Mutator {
  return {
    id: 'passthrough',
    headers: ['authorization'],
    mutate(input, out) {
      const v = readHeader(input.request.headers, 'authorization');
      if (typeof v === 'string') out.authorization = v;
      return undefined;
    },
  };
}
