/**
 * Run work holding a named lock in the store (`Store.tryLock`): exclusive across provider
 * processes and across operations of one process (each call is its own holder).
 *
 * Liveness (issue 12): the holder text says which process holds the lock (store/lock-holder.ts),
 * so the SQLite store hands a lock whose holder on this host is dead to the next taker at once.
 * A holder it cannot judge (on another host) keeps the lock for `ttlMs` (default 20 s) past its
 * last renewal, and a live holder renews it every third of that while its work runs, so a long
 * operation keeps its lock and a dead one blocks others for at most `ttlMs`. (PostgreSQL ends a
 * lock with its holder's session and ignores the TTL.)
 *
 * Waiters in one process queue in front of the store (first come, first served, per store
 * object and lock name): only the head of the queue asks the store, and the next one starts the
 * moment the previous one is done, instead of every waiter polling (50 attaches on one shared
 * target were 50 pollers, each sleeping up to 50 ms past the moment the lock fell free). The
 * head polls with backoff (2 ms doubling to 50 ms) only while another process holds the lock.
 * After {@link WAIT_NOTICE_MS} (queue and store together) one line
 * through `log` says who holds the lock (and one more how long it took, once taken), and past
 * `timeoutMs` it throws what `timedOut` makes of that same description.
 */
import { randomUUID } from "node:crypto";
import type { Store } from "./store";
import { describeHolder, holderText } from "./lock-holder";

/** How long a lock outlives its holder's last renewal where liveness cannot be judged. */
export const LOCK_TTL_MS = 20_000;
/** How long a waiter waits before it says who holds the lock. */
export const WAIT_NOTICE_MS = 3_000;

export interface StoreLockOptions {
  /** How long to wait for the lock before giving up. */
  timeoutMs: number;
  /** Prefix of the operation id in the holder text (the caller's own id). */
  holderPrefix?: string;
  /** How long the lock outlives a holder that stopped renewing it (default {@link LOCK_TTL_MS}). */
  ttlMs?: number;
  /** The error for a wait past `timeoutMs`; `heldBy` describes the holder when known (`pid 4242 (node …) on host h since 12:00:03 UTC`). */
  timedOut: (heldBy?: string) => Error;
  /** Where the line "waiting for lock …, held by …" goes (once per wait, after {@link WAIT_NOTICE_MS}). */
  log?: (message: string) => void;
}

export async function withStoreLock<T>(
  store: Pick<Store, "tryLock" | "unlock"> & Partial<Pick<Store, "lockHolder">>,
  name: string,
  o: StoreLockOptions,
  fn: () => Promise<T>,
): Promise<T> {
  const op = o.holderPrefix ? `${o.holderPrefix}:${randomUUID()}` : randomUUID();
  const holder = holderText(op);
  const ttlMs = o.ttlMs ?? LOCK_TTL_MS;
  const heldBy = async () => {
    const text = await store.lockHolder?.(name).catch(() => undefined);
    return text === undefined ? undefined : describeHolder(text);
  };
  const started = Date.now();
  let told = false;
  const notice = async () => {
    const waited = Date.now() - started;
    if (!told && waited >= WAIT_NOTICE_MS && o.log) {
      told = true;
      const who = await heldBy();
      o.log(`waiting for lock ${name} (${Math.round(waited / 1000)} s so far)${who ? `, held by ${who}` : ""}`);
    }
  };
  const turn = inProcessTurn(store, name);
  try {
    // First our turn in this process (the previous local holder is done, or gave up waiting)…
    for (;;) {
      const waited = Date.now() - started;
      if (waited > o.timeoutMs) throw o.timedOut(await heldBy());
      const limit = (told || !o.log ? o.timeoutMs : Math.min(o.timeoutMs, WAIT_NOTICE_MS)) - waited + 1;
      if (await turn.ready(limit)) break;
      await notice();
    }
    // …then the store's lock, which only another process can hold now.
    let wait = 2;
    while (!(await store.tryLock(name, holder, ttlMs))) {
      if (Date.now() - started > o.timeoutMs) throw o.timedOut(await heldBy());
      await notice();
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 50);
    }
    if (told) o.log?.(`lock ${name} taken after waiting ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return await holding(store, name, holder, ttlMs, o.log, fn);
  } finally {
    turn.done();
  }
}

/** Run `fn` with the lock taken, renewing it, and give it back. */
async function holding<T>(store: Pick<Store, "tryLock" | "unlock">, name: string, holder: string, ttlMs: number, log: ((message: string) => void) | undefined, fn: () => Promise<T>): Promise<T> {
  // Why the promise is kept: a renewal still in flight when the work ends would take the lock again after the unlock.
  let renewing: Promise<unknown> = Promise.resolve();
  const renew = setInterval(() => {
    renewing = store.tryLock(name, holder, ttlMs).then(
      (kept) => (kept ? undefined : log?.(`lock ${name} was taken over by another holder while this one still worked (it had not been renewed for ${ttlMs} ms)`)),
      () => undefined, // a busy state: the next renewal tries again, well within the TTL
    );
  }, Math.max(1, Math.floor(ttlMs / 3)));
  renew.unref();
  try {
    return await fn();
  } finally {
    clearInterval(renew);
    await renewing;
    await store.unlock(name, holder);
  }
}

/** The in-process queues, per store object and lock name: the promise the last comer waits for. */
const queues = new WeakMap<object, Map<string, Promise<void>>>();

/**
 * A place in this process's queue for lock `name` of `store`: `ready(ms)` says whether the turn
 * came within `ms`; `done()` (always, taken or not) lets the next one go once ours would have
 * ended, so one that gives up waiting never lets its successor pass its predecessor.
 */
function inProcessTurn(store: object, name: string): { ready(ms: number): Promise<boolean>; done(): void } {
  let byName = queues.get(store);
  if (!byName) queues.set(store, (byName = new Map()));
  const previous = byName.get(name) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const tail = previous.then(() => mine);
  byName.set(name, tail);
  let ready = false;
  void previous.then(() => (ready = true));
  return {
    async ready(ms) {
      if (ready) return true;
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), Math.max(0, ms))));
      try {
        return await Promise.race([previous.then(() => true as const), late]);
      } finally {
        clearTimeout(timer);
      }
    },
    done() {
      release();
      // The last in line cleans up: nothing queues behind a finished turn.
      void tail.then(() => {
        if (byName.get(name) === tail) byName.delete(name);
      });
    },
  };
}
