/**
 * Run work holding a named lock in the store (`Store.tryLock`): exclusive across provider
 * processes and across operations of one process (each call is its own holder, `holderPrefix`
 * plus a fresh id). The lock expires after `timeoutMs` should its holder die; waiting polls with
 * backoff (2 ms doubling to 50 ms) and, past `timeoutMs`, throws what `timedOut` makes.
 */
import { randomUUID } from "node:crypto";
import type { Store } from "./store";

export async function withStoreLock<T>(
  store: Pick<Store, "tryLock" | "unlock">,
  name: string,
  o: { timeoutMs: number; holderPrefix?: string; timedOut: () => Error },
  fn: () => Promise<T>,
): Promise<T> {
  const holder = o.holderPrefix ? `${o.holderPrefix}:${randomUUID()}` : randomUUID();
  const deadline = Date.now() + o.timeoutMs;
  let wait = 2;
  while (!(await store.tryLock(name, holder, o.timeoutMs))) {
    if (Date.now() > deadline) throw o.timedOut();
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 50);
  }
  try {
    return await fn();
  } finally {
    await store.unlock(name, holder);
  }
}
