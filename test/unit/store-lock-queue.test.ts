/**
 * withStoreLock's in-process queue: waiters of one process wait their turn in line (first come,
 * first served) instead of each polling the store, and the store's lock still excludes other
 * processes (a holder the store reports, which no local waiter knows of).
 */
import { withStoreLock } from "../../provider/src/store/lock";

/** A store lock table in memory, counting every tryLock. */
function fakeStore() {
  const held = new Map<string, string>();
  const s = {
    tries: 0,
    async tryLock(name: string, holder: string): Promise<boolean> {
      s.tries++;
      const h = held.get(name);
      if (h !== undefined && h !== holder) return false;
      held.set(name, holder);
      return true;
    },
    async unlock(name: string, holder: string): Promise<void> {
      if (held.get(name) === holder) held.delete(name);
    },
    held,
  };
  return s;
}

const timedOut = () => new Error("timed out");
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("50 waiters in one process: each asks the store once, in the order they came, one at a time", async () => {
  const store = fakeStore();
  const order: number[] = [];
  let inside = 0;
  await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      withStoreLock(store, "export:t1", { timeoutMs: 10_000, timedOut }, async () => {
        inside++;
        expect(inside).toBe(1);
        await tick(2);
        order.push(i);
        inside--;
      }),
    ),
  );
  expect(order).toEqual(Array.from({ length: 50 }, (_, i) => i));
  // Without the queue every waiter polls: hundreds of tries.
  expect(store.tries).toBe(50);
  expect(store.held.size).toBe(0);
});

test("another process holding the lock still excludes this one: the head of the line polls until it is free", async () => {
  const store = fakeStore();
  store.held.set("export:t1", "other-process");
  let ran = false;
  const waiting = withStoreLock(store, "export:t1", { timeoutMs: 10_000, timedOut }, async () => void (ran = true));
  await tick(30);
  expect(ran).toBe(false);
  store.held.delete("export:t1");
  await waiting;
  expect(ran).toBe(true);
});

test("a waiter that gives up leaves its place without letting the next one pass the holder; an error frees the turn", async () => {
  const store = fakeStore();
  let releaseFirst!: () => void;
  const first = withStoreLock(store, "l", { timeoutMs: 10_000, timedOut }, () => new Promise<void>((r) => (releaseFirst = r)));
  const impatient = withStoreLock(store, "l", { timeoutMs: 20, timedOut }, async () => "never");
  let thirdRan = false;
  const third = withStoreLock(store, "l", { timeoutMs: 10_000, timedOut }, async () => void (thirdRan = true));
  await expect(impatient).rejects.toThrow("timed out");
  await tick(20);
  expect(thirdRan).toBe(false); // still behind the first
  releaseFirst();
  await first;
  await third;
  expect(thirdRan).toBe(true);
  await expect(withStoreLock(store, "l", { timeoutMs: 1000, timedOut }, async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
  await withStoreLock(store, "l", { timeoutMs: 1000, timedOut }, async () => undefined);
  expect(store.held.size).toBe(0);
});

test("different lock names and different stores do not wait for each other", async () => {
  const store = fakeStore();
  let release!: () => void;
  const a = withStoreLock(store, "a", { timeoutMs: 10_000, timedOut }, () => new Promise<void>((r) => (release = r)));
  await withStoreLock(store, "b", { timeoutMs: 1000, timedOut }, async () => undefined);
  await withStoreLock(fakeStore(), "a", { timeoutMs: 1000, timedOut }, async () => undefined);
  release();
  await a;
});
