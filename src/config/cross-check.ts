/**
 * Checks that compare fields or sections run in the same parse as the schema's field checks, so
 * one error lists both kinds of problem. Zod skips a refinement once a field failed; these run
 * anyway (`always`) and read only what {@link Trusted} vouches for: a field that failed may hold
 * the raw input, and a check on it would report nonsense or a second problem for the same mistake.
 *
 * @module
 */
import type { z } from 'zod';
import type { ConfigIssue } from '../core/errors.ts';

/**
 * True when the value at `path` (below the object being checked) is what the schema promises:
 * nothing at or under it failed, and nothing above it failed in a way that stopped parsing (a
 * wrong type). A failed refinement above it (`a public route has no rules`) or an unknown key
 * beside it leaves it parsed.
 */
export type Trusted = (...path: PropertyKey[]) => boolean;

/** Everything is trusted: for values that already passed the schema. */
export const everything: Trusted = () => true;

/** {@link Trusted} for the issues found so far in one parse. */
export function trusted(issues: readonly z.core.$ZodRawIssue[]): Trusted {
  return (...path) =>
    !issues.some((issue) => {
      const at = issue.path ?? [];
      const common = Math.min(at.length, path.length);
      for (let i = 0; i < common; i++) if (at[i] !== path[i]) return false;
      if (at.length >= path.length) return true;
      return issue.continue !== true && issue.code !== 'unrecognized_keys';
    });
}

/** The options that make a refinement run even when fields of its object already failed. */
export const always = { when: (payload: { value: unknown }) => typeof payload.value === 'object' && payload.value !== null };

/**
 * Add issues whose paths are already written out (`gateway.routes[2].rules[0].scopes[1]`, as the
 * policy and scope compilers report them) to a parse. Only at the root, where no parent prefixes
 * the path; `toConfigIssues` (parse.ts) reads it back.
 */
export function addConfigIssues(ctx: z.core.$RefinementCtx, issues: readonly ConfigIssue[]): void {
  for (const i of issues) ctx.addIssue({ code: 'custom', path: [], message: i.message, params: { configPath: i.path } });
}
