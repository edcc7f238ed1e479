/**
 * `credential: static`: a token from the environment (`${GATEWAY_TOKEN}`) sent to the upstream
 * with every request. Rotating it is a config reload: in-flight requests keep the value they
 * started with, new ones get the new value, no connection is dropped.
 *
 * @module
 */
import type { Mutator } from './mutator.ts';

export function staticCredentialMutator(header: string, scheme: string, token: string): Mutator {
  const value = scheme === '' ? token : `${scheme} ${token}`;
  return {
    id: 'static',
    headers: [header],
    mutate(_input, out) {
      out[header] = value;
      return undefined;
    },
  };
}
