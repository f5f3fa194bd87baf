/**
 * Seed 000's race, on a real tgtd: a detach of volume A and an attach of volume B on the same
 * shared target, at the same time. Without the (host, backendId) lock, A's detach can find the
 * target unused and remove it just after B's attach added its LUN: B looks attached but is gone.
 * Each round then checks that B's LUN is really reachable (an iSCSI login and a read).
 *
 * SDS_RACE_ROUNDS sets the rounds (default 200).
 */
import { type Env, cannotRun, makeEnv, qemuIo } from "./harness";

jest.setTimeout(1_800_000);
const why = cannotRun();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const rounds = Number(process.env.SDS_RACE_ROUNDS ?? 200);
const INITIATOR = "iqn.2026-11.test.host:racer";
const spec = (name: string) => ({ name, sizeGib: 1, multiAttach: false, description: "", metadata: {} });

/** Run the rounds; returns how many ended with B unreachable. */
async function race(env: Env, lock: boolean): Promise<{ failures: number; examples: string[] }> {
  const a = env.make(lock);
  const A = await env.controller.createVolume(`urn:A:${lock}`, spec(`A-${lock}`));
  const B = await env.controller.createVolume(`urn:B:${lock}`, spec(`B-${lock}`));
  const attach = (v: typeof A, owner: string) => a.attach(owner, { volumeId: v.id, host: "hostX", mode: "rw", connector: { initiator: INITIATOR } });
  let failures = 0;
  const examples: string[] = [];
  let onA = await attach(A, "urn:a");
  const fail = (round: number, why: string) => {
    failures++;
    if (examples.length < 3) examples.push(`round ${round}: ${why}`);
  };
  for (let round = 0; round < rounds; round++) {
    const [detached, onB] = await Promise.allSettled([a.detach(onA.row.id), attach(B, `urn:b${round}`)]);
    if (detached.status === "rejected") fail(round, `detach of A failed: ${detached.reason}`);
    if (onB.status === "rejected") fail(round, `attach of B failed: ${onB.reason}`);
    else {
      const io = await qemuIo(onB.value.connectionInfo, "read 0 4k", { initiator: INITIATOR, readOnly: true });
      if (!io.ok) fail(round, `B unreachable: ${io.output.trim().split("\n").pop()}`);
    }
    // Back to the start, sequentially: nothing of B attached, A attached.
    for (const x of env.store.listAttachments()) if (x.volumeId === A.id || x.volumeId === B.id) await a.detach(x.id).catch(() => undefined);
    onA = await attach(A, `urn:a${round}`);
  }
  for (const x of env.store.listAttachments()) await a.detach(x.id).catch(() => undefined);
  return { failures, examples };
}

suite("seed 000: concurrent detach of A and attach of B on one shared target", () => {
  let env: Env;
  beforeAll(async () => {
    env = await makeEnv({ protocol: "iscsi", sharedTargets: true });
  });
  afterAll(async () => env?.close());

  test(`without the lock the race is seen (the test can fail) [${rounds} rounds]`, async () => {
    const r = await race(env, false);
    expect(r.failures).toBeGreaterThan(0);
  });

  test(`with the lock, B's LUN is reachable after every round [${rounds} rounds]`, async () => {
    const r = await race(env, true);
    expect(r.examples).toEqual([]);
    expect(r.failures).toBe(0);
  });
});
