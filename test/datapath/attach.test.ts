/**
 * Attachments on the real data path: tgtd and nbdkit started by the controller, initiators are
 * real tools. Data written through an rw attachment is read through a second attachment of the
 * same multiAttach volume; ro attachments refuse writes; unknown initiators and wrong CHAP are
 * refused; after detach nothing is left.
 */
import { ChildProcess } from "node:child_process";
import { UserError } from "../../provider/src/errors";
import { type Env, cannotRun, makeEnv, processesMentioning, qemuIo } from "./harness";

jest.setTimeout(300_000);
const why = cannotRun();
const suite = why ? describe.skip : describe;
if (why) test.skip(`skipped: ${why}`, () => undefined);

const spec = (name: string, multiAttach = true) => ({ name, sizeGib: 1, multiAttach, description: "", metadata: {} });
const I1 = "iqn.2026-11.test.host:one";
const I2 = "iqn.2026-11.test.host:two";
const I3 = "iqn.2026-11.test.host:three";

suite.each([
  ["shared targets", true],
  ["one target per volume", false],
])("iSCSI with CHAP, %s", (_label, sharedTargets) => {
  let env: Env;
  beforeAll(async () => {
    env = await makeEnv({ protocol: "iscsi", sharedTargets, chap: true });
  });
  afterAll(async () => env?.close());

  test("rw writes, a second (ro) attachment reads it, ro refuses writes, strangers and wrong CHAP are refused, detach leaves nothing", async () => {
    const v = await env.controller.createVolume("urn:v", spec("v"));
    const rw = await env.attachments.attach("urn:rw", { volumeId: v.id, host: "hostA", mode: "rw", connector: { initiator: I1 } });
    const ro = await env.attachments.attach("urn:ro", { volumeId: v.id, host: "hostB", mode: "ro", connector: { initiator: I2 } });
    expect(rw.connectionInfo).toMatchObject({ protocol: "iscsi", portals: [env.portal], authMethod: "CHAP", readOnly: false });
    expect(ro.connectionInfo.readOnly).toBe(true);
    expect((await env.controller.getVolume(v.id))?.status).toBe("in-use");

    expect((await qemuIo(rw.connectionInfo, "write -P 0x5a 0 1M", { initiator: I1 })).ok).toBe(true);
    const read = await qemuIo(ro.connectionInfo, "read -P 0x5a 0 1M", { initiator: I2, readOnly: true });
    expect(read.output).toMatch(/read 1048576\/1048576 bytes/);
    expect(read.ok).toBe(true);

    const write = await qemuIo(ro.connectionInfo, "write -P 0x11 0 4k", { initiator: I2 });
    expect(write.ok).toBe(false);
    expect(write.output).toMatch(/write protected|Permission denied|read-only/i);

    const stranger = await qemuIo(rw.connectionInfo, "read 0 4k", { initiator: I3, readOnly: true });
    expect(stranger.ok).toBe(false);
    expect(stranger.output).toMatch(/Target not found|log in/i);
    const badChap = await qemuIo(rw.connectionInfo, "read 0 4k", { initiator: I1, readOnly: true, password: "not-the-password" });
    expect(badChap.ok).toBe(false);
    expect(badChap.output).toMatch(/Authentication failure/);

    // The CHAP password is sealed in the database.
    const target = (await env.store.getTarget(rw.row.targetName!))!;
    expect(target.chapSecretEnc).not.toContain(rw.connectionInfo.authPassword!);

    await env.attachments.detach(rw.row.id);
    await env.attachments.detach(ro.row.id);
    await env.attachments.detach(ro.row.id); // gone: success
    expect(await env.make().ensureExports()).toEqual({ ensured: 0, removed: [], kept: [], reaped: [] });
    const { localTargets } = await import("../../provider/src/targets/local-targets");
    expect(await localTargets(`${env.dir}/run`).iscsi(env.portal).list()).toEqual([]);
    expect(await env.store.listTargets()).toEqual([]);
    expect((await env.controller.getVolume(v.id))?.status).toBe("available");
  });

  test("50 attachments at once (one process): every one made, ONE tgtd launched, each initiator logs in with its CHAP; 50 detaches at once leave nothing", async () => {
    const own = await makeEnv({ protocol: "iscsi", sharedTargets, chap: true });
    // Every child process starts through ChildProcess.prototype.spawn (internal: not in Node's typings).
    const spawn = jest.spyOn(ChildProcess.prototype as unknown as { spawn: (o: { file?: string }) => unknown }, "spawn");
    try {
      const volumes = await Promise.all(Array.from({ length: 50 }, (_, i) => own.controller.createVolume(`urn:c${i}`, spec(`c${i}`, false))));
      const made = await Promise.all(volumes.map((v, i) => own.attachments.attach(`urn:ac${i}`, { volumeId: v.id, host: "hostA", mode: "rw", connector: { initiator: `iqn.2026-11.test.host:c${i % 3}` } })));
      const launched = spawn.mock.calls.map(([o]) => o.file ?? "").filter((f) => f.endsWith("tgtd"));
      expect(launched).toHaveLength(1);
      for (const i of [0, 49]) {
        const r = await qemuIo(made[i]!.connectionInfo, "read 0 4k", { initiator: `iqn.2026-11.test.host:c${i % 3}` });
        expect(r.output).toMatch(/read 4096\/4096 bytes/);
      }
      await Promise.all(made.map((m) => own.attachments.detach(m.row.id)));
      expect(await own.store.listAttachments()).toEqual([]);
      expect(await own.store.listTargets()).toEqual([]);
      expect(await own.targets.iscsi(own.portal).list()).toEqual([]);
    } finally {
      spawn.mockRestore();
      await own.close();
    }
  });

  test("a second attachment of a volume that is not multiAttach is refused, naming the first", async () => {
    const v = await env.controller.createVolume("urn:single", spec("single", false));
    const first = await env.attachments.attach("urn:a1", { volumeId: v.id, host: "hostA", mode: "rw", connector: { initiator: I1 } });
    const err = await env.attachments.attach("urn:a2", { volumeId: v.id, host: "hostB", mode: "rw", connector: { initiator: I2 } }).catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toContain(`attachment ${first.row.id} to host hostA`);
    expect(await env.store.listAttachments({ volumeId: v.id })).toHaveLength(1);
    // A retried create of the same attachment is the same attachment.
    expect((await env.attachments.attach("urn:a1", { volumeId: v.id, host: "hostA", mode: "rw", connector: { initiator: I1 } })).row.id).toBe(first.row.id);
    await expect(env.controller.deleteVolume(v.id)).rejects.toThrow(/is attached/);
    await env.attachments.detach(first.row.id);
    await env.controller.deleteVolume(v.id);
  });

  test("after a restart of the target daemon, ensureExports brings the exports back; unknown targets of this state go, other states' stay", async () => {
    const v = await env.controller.createVolume("urn:r", spec("r"));
    const a = await env.attachments.attach("urn:ra", { volumeId: v.id, host: "hostA", mode: "rw", connector: { initiator: I1 } });
    expect((await qemuIo(a.connectionInfo, "write -P 0x77 0 64k", { initiator: I1 })).ok).toBe(true);
    const { localTargets } = await import("../../provider/src/targets/local-targets");
    const tgt = localTargets(`${env.dir}/run`).iscsi(env.portal);
    await tgt.stop();
    expect((await qemuIo(a.connectionInfo, "read 0 4k", { initiator: I1, readOnly: true })).ok).toBe(false);
    await tgt.start();
    const tag = await env.attachments.stateTag();
    const stray = `iqn.2026-11.io.sds:${tag}:stray`;
    const foreign = "iqn.2026-11.io.sds:0123456789ab:volume-of-another-state";
    await tgt.ensureTarget(stray);
    await tgt.ensureTarget(foreign);
    const r = await env.make().ensureExports();
    expect(r.ensured).toBe(1);
    expect(r.removed).toEqual([stray]);
    expect((await tgt.list()).map((t) => t.name).sort()).toEqual([foreign, a.row.targetName].sort());
    await tgt.removeTarget((await tgt.list()).find((t) => t.name === foreign)!.tid!);
    expect((await qemuIo(a.connectionInfo, "read -P 0x77 0 64k", { initiator: I1, readOnly: true })).ok).toBe(true);
    await env.attachments.detach(a.row.id);
  });
});

suite("NBD", () => {
  let env: Env;
  beforeAll(async () => {
    env = await makeEnv({ protocol: "nbd", sharedTargets: true });
  });
  afterAll(async () => env?.close());

  test("rw writes, ro reads it and refuses writes, detach stops every nbdkit of ours", async () => {
    const v = await env.controller.createVolume("urn:n", spec("n"));
    const rw = await env.attachments.attach("urn:nrw", { volumeId: v.id, host: "hostA", mode: "rw", connector: { ip: "127.0.0.1" } });
    const ro = await env.attachments.attach("urn:nro", { volumeId: v.id, host: "hostB", mode: "ro", connector: { ip: "127.0.0.1" } });
    expect(rw.connectionInfo).toMatchObject({ protocol: "nbd", exportName: `volume-${v.id}`, readOnly: false });
    expect(ro.connectionInfo.portals[0]).not.toBe(rw.connectionInfo.portals[0]);
    expect((await qemuIo(rw.connectionInfo, "write -P 0x3c 0 1M")).ok).toBe(true);
    expect((await qemuIo(ro.connectionInfo, "read -P 0x3c 0 1M", { readOnly: true })).ok).toBe(true);
    const write = await qemuIo(ro.connectionInfo, "write -P 0x11 0 4k");
    expect(write.ok).toBe(false);
    expect(processesMentioning(env.dir).length).toBeGreaterThan(0);
    await env.attachments.detach(rw.row.id);
    await env.attachments.detach(ro.row.id);
    expect(processesMentioning(env.dir)).toEqual([]);
    expect(await env.store.listTargets()).toEqual([]);
  });
});
