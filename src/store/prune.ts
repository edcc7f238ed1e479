/**
 * {@link Store.prune} in bounded batches, the same for every SQL backend: each table is emptied of
 * what expired a batch at a time, each batch its own short write, so a prune of millions of rows
 * (the first after an upgrade, a `grant_retention` cut) never holds the SQLite write lock or a
 * PostgreSQL transaction, its row locks and a pool connection for long, and a call stops once its
 * time budget is spent, leaving the rest to the next call.
 *
 * @module
 */
import type { Store } from './contract.ts';

/** Default rows deleted per batch (one write) by {@link Store.prune}. */
export const PRUNE_BATCH_SIZE = 1000;
/**
 * Default time budget of one {@link Store.prune} call, milliseconds: no batch starts after it (one
 * that started runs to its end). The token service's sync awaits the prune, and calls again on its
 * next round (every `sync_interval`) when this one stopped short.
 */
export const PRUNE_BUDGET_MS = 1000;

/** How a store's prune is tuned (store options; tests pass small ones). */
export interface PruneTuning {
  /** Rows deleted per batch, each batch its own write. Default {@link PRUNE_BATCH_SIZE}. */
  readonly pruneBatchSize?: number;
  /**
   * Milliseconds after which one prune call starts no further batch, once it has deleted
   * something (a call always makes progress); the next call goes on. Default {@link PRUNE_BUDGET_MS}.
   */
  readonly pruneBudgetMillis?: number;
}

/** {@link PruneTuning} with its defaults applied. */
export function pruneTuning(t: PruneTuning): { readonly batch: number; readonly budget: number } {
  return {
    batch: Math.max(1, Math.floor(t.pruneBatchSize ?? PRUNE_BATCH_SIZE)),
    budget: Math.max(0, t.pruneBudgetMillis ?? PRUNE_BUDGET_MS),
  };
}

/** One table's part of a prune. */
export interface PruneStep {
  /** Delete at most `limit` expired rows, in one short write; how many it deleted. */
  readonly batch: (limit: number) => number | Promise<number>;
  /**
   * Deleting can make more rows deletable (grants: a parent is deleted only once its children
   * are), so a batch of fewer than `limit` rows does not mean none are left: run until a batch
   * deletes nothing.
   */
  readonly untilEmpty?: boolean;
}

/**
 * Run `steps` in order, each to its end (a batch of fewer than `limit` rows, or of none when
 * `untilEmpty`) before the next starts, so a later step sees what an earlier one left (refresh
 * tokens go before the grants they belong to). `between` runs before every batch but the first
 * (SQLite: a turn of the event loop for the requests waiting). True when every step ran to its end;
 * false when the budget ran out first (once something was deleted), the rest left to the next call.
 */
export async function pruneInBatches(
  steps: readonly PruneStep[],
  tuning: { readonly batch: number; readonly budget: number },
  between: () => Promise<void> = async () => {},
): Promise<boolean> {
  const started = performance.now();
  let deleted = 0;
  let batches = 0;
  for (const step of steps) {
    for (;;) {
      if (deleted > 0 && performance.now() - started >= tuning.budget) return false;
      if (batches++ > 0) await between();
      const n = await step.batch(tuning.batch);
      deleted += n;
      if (step.untilEmpty ? n === 0 : n < tuning.batch) break;
    }
  }
  return true;
}
