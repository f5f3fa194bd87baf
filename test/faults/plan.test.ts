/** The fault harness's pure parts: kill plans replay from their seed and cover every target and phase; lock-wait lines are read for their seconds. */
import { lockWaits, planKills } from "./harness";

test("a seed replays the same kill points; 9 in a row cover every target × phase", () => {
  expect(planKills(7, 20)).toEqual(planKills(7, 20));
  expect(planKills(7, 20)).not.toEqual(planKills(8, 20));
  const pairs = new Set(planKills(3, 9).map((k) => `${k.target}@${k.phase}`));
  expect(pairs.size).toBe(9);
  for (const k of planKills(5, 30)) if (k.target === "agent" && k.phase !== "failover") expect(k).toMatchObject({ resource: "a-nbd", k: 1 });
  expect(planKills(5, 30, { agent: false }).some((k) => k.target === "agent")).toBe(false);
});

test("lock waits: the provider's lines and their longest wait; the CLI's stack lock is not one", () => {
  const out = [
    "    sds:index:Volume v1  waiting for lock volume:abc (3 s so far), held by pid 4242 (node …) on host h since 12:00:03 UTC",
    "    sds:index:Volume v1  lock volume:abc taken after waiting 6.5 s",
    "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file with `pulumi cancel`.",
  ].join("\n");
  expect(lockWaits(out)).toEqual({ lines: [expect.stringContaining("waiting for lock"), expect.stringContaining("taken after waiting 6.5 s")], seconds: 6.5 });
  expect(lockWaits("error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end")).toEqual({ lines: [], seconds: undefined });
});
