// The throttle between the controller's progress reports (as often as it likes) and the engine's
// messages (a few per second at most; an info line every 10% or 5 s for a CI log).
import { ProgressThrottle, progressListener } from "../../provider/src/domain/progress-throttle";

const MiB = 1024 * 1024;

/** A throttle on a clock the test moves. */
function clocked(o: { statusEveryMs?: number; infoEveryPercent?: number; infoEveryMs?: number } = {}) {
  let t = 0;
  const throttle = new ProgressThrottle('clone of volume "big"', { ...o, now: () => t });
  return { throttle, at: (ms: number) => (t = ms) };
}

test("a report every millisecond gives at most 2 status messages a second, and an info line per 10%", () => {
  const { throttle, at } = clocked();
  const total = 1000 * MiB;
  let status = 0;
  const infos: string[] = [];
  // 10 s of reports, one per ms, 100 MiB/s.
  for (let ms = 0; ms <= 10_000; ms++) {
    at(ms);
    const m = throttle.next({ doneBytes: (ms / 10_000) * total, totalBytes: total });
    if (m.status) status++;
    if (m.info) infos.push(m.info);
  }
  expect(status).toBeLessThanOrEqual(10_000 / 500 + 2);
  expect(status).toBeGreaterThanOrEqual(10_000 / 500);
  expect(infos).toHaveLength(10);
  expect(infos[0]).toBe('clone of volume "big": 10% (100 MiB of 1000 MiB, 100 MiB/s)');
  expect(infos.at(-1)).toBe('clone of volume "big": 100% (1000 MiB of 1000 MiB, 100 MiB/s)');
});

test("slow work still gets an info line every 5 s", () => {
  const { throttle, at } = clocked();
  const infos: number[] = [];
  // 1% a second for 20 s: no 10% step is crossed before 10 s.
  for (let s = 0; s <= 20; s++) {
    at(s * 1000);
    if (throttle.next({ doneBytes: s, totalBytes: 100 }).info) infos.push(s);
  }
  expect(infos).toEqual([5, 10, 15, 20]);
});

test("the end always reports, once; nothing after it; nothing while the total is unknown", () => {
  const { throttle, at } = clocked();
  expect(throttle.next({ doneBytes: 0, totalBytes: 0 })).toEqual({});
  at(0);
  expect(throttle.next({ doneBytes: 1, totalBytes: 100 }).status).toBeDefined();
  at(10);
  const end = throttle.next({ doneBytes: 100, totalBytes: 100 });
  expect(end.status).toMatch(/: 100% /);
  expect(end.info).toMatch(/: 100% /);
  at(10_000);
  expect(throttle.next({ doneBytes: 100, totalBytes: 100 })).toEqual({});
});

test("sizes past 10 GiB read in GiB; a report beyond the total counts as the total", () => {
  const { throttle, at } = clocked();
  at(0);
  throttle.next({ doneBytes: 0, totalBytes: 20 * 1024 * MiB });
  at(2000);
  expect(throttle.next({ doneBytes: 30 * 1024 * MiB, totalBytes: 20 * 1024 * MiB }).info).toBe('clone of volume "big": 100% (20.0 GiB of 20.0 GiB, 10.0 GiB/s)');
});

test("progressListener sends the throttle's messages to the sink: the info line alone when a report is worth both", () => {
  const sent: string[] = [];
  let t = 0;
  const listen = progressListener("initial sync of pair \"dr\"", { status: (m) => sent.push(`status ${m}`), info: (m) => sent.push(`info ${m}`) }, { now: () => t });
  listen({ doneBytes: 0, totalBytes: 10 * MiB });
  t = 1000;
  listen({ doneBytes: 10 * MiB, totalBytes: 10 * MiB });
  expect(sent).toEqual([
    'status initial sync of pair "dr": 0% (0 MiB of 10 MiB)',
    'info initial sync of pair "dr": 100% (10 MiB of 10 MiB, 10 MiB/s)',
  ]);
});
