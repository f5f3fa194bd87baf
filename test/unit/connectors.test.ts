/**
 * Connectors without a real host: a recording Runner/Spawner, a fake process table and a fake
 * file-system root (/sys, /proc/mounts, /etc, /dev). Proves the exact argv of the kernel and
 * userspace paths, the idempotence decisions taken from records, secret masking and the probe.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Connection } from "../../provider/src/connectors/connector";
import { connectorFor } from "../../provider/src/connectors/factory";
import { IscsiConnector } from "../../provider/src/connectors/iscsi-connector";
import { LocalConnector } from "../../provider/src/connectors/local-connector";
import { NbdConnector } from "../../provider/src/connectors/nbd-connector";
import { Host, parseLosetupJson, probe } from "../../provider/src/connectors/host";
import { RecordStore } from "../../provider/src/connectors/records";
import { DaemonRecords } from "../../provider/src/exec/daemons";
import type { Spawner } from "../../provider/src/exec/processes";
import { BackendError, CommandFailedError, DeviceBusyError, type UserError } from "../../provider/src/errors";
import type { RunOptions, Runner } from "../../provider/src/exec/run";
import type { ProcessTable } from "../../provider/src/exec/processes";

/** A helper's file named for one start (`<base>.<attempt id>.<suffix>`, see exec/daemons.ts): a second start never reuses it. */
const attempt = (base: string, suffix: string) => expect.stringMatching(new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.[0-9a-f]{8}${suffix.replace(/\./g, "\\.")}$`));

const PASSWORD = "Unit-Chap-Secret-9";

/** What exec/run throws for a failed command: `"exit N"`, or exit 1 with `message` on stderr. */
function commandFailed(argv: string[], message: string, secrets?: string[]): CommandFailedError {
  const exit = /^exit (\d+)$/.exec(message);
  return new CommandFailedError({ argv, exitCode: exit ? Number(exit[1]) : 1, stderr: exit ? "" : message, secrets });
}
const caps = { iscsiKernel: false, nbdKernel: false, userspace: true };

/** The fake host: a root folder, loop devices, mounts, processes; every command recorded. */
class FakeHost {
  readonly root = fs.mkdtempSync(path.join(os.tmpdir(), "sds-unit-conn-"));
  readonly stateDir = path.join(this.root, "state");
  readonly calls: string[][] = [];
  readonly options: Array<RunOptions | undefined> = [];
  readonly spawned: string[][] = [];
  loops: Array<{ name: string; file: string; ro: boolean }> = [];
  live = new Map<number, string>();
  nextLoop = 7;
  nextPid = 4000;
  /** argv prefix (joined) → error to throw. */
  failures = new Map<string, string>();
  /** argv prefix (joined) → errors to throw, one per call, then the command works. */
  flaky = new Map<string, string[]>();
  /** Backoff delays the host waited (its injected sleep). */
  slept: number[] = [];
  /** Extra behaviour per command. */
  on: Record<string, (args: readonly string[]) => string | void> = {};

  constructor() {
    this.setMounts([]);
  }

  setMounts(lines: string[]): void {
    fs.mkdirSync(path.join(this.root, "proc"), { recursive: true });
    fs.writeFileSync(path.join(this.root, "proc/mounts"), lines.map((l) => `${l}\n`).join(""));
  }

  touch(p: string, content = ""): void {
    fs.mkdirSync(path.dirname(path.join(this.root, p)), { recursive: true });
    fs.writeFileSync(path.join(this.root, p), content);
  }

  run: Runner = async (file, args, options) => {
    this.calls.push([file, ...args]);
    this.options.push(options);
    const line = [file, ...args].join(" ");
    for (const [prefix, message] of this.failures) {
      if (line.startsWith(prefix)) throw commandFailed([file, ...args], message, options?.secrets);
    }
    for (const [prefix, messages] of this.flaky) {
      const message = line.startsWith(prefix) ? messages.shift() : undefined;
      if (message) throw commandFailed([file, ...args], message, options?.secrets);
    }
    let stdout = "";
    if (file === "losetup" && args[0] === "--json") {
      stdout = JSON.stringify({ loopdevices: this.loops.map((l) => ({ name: l.name, "back-file": l.file, ro: l.ro })) });
    } else if (file === "losetup" && args[0] === "-f") {
      const name = `/dev/loop${this.nextLoop++}`;
      this.loops.push({ name, file: args[args.length - 1], ro: args.includes("--read-only") });
      stdout = `${name}\n`;
    } else if (file === "losetup" && args.at(-2)?.startsWith("/dev/loop")) {
      // losetup [--read-only] /dev/loopN FILE: attach at that device
      this.loops.push({ name: args.at(-2) as string, file: args.at(-1) as string, ro: args.includes("--read-only") });
    } else if (file === "losetup" && args[0] === "-d") {
      this.loops = this.loops.filter((l) => l.name !== args[1]);
    } else if (file === "blockdev" && args[0] === "--getsize64") {
      stdout = "33554432\n";
    }
    stdout = this.on[file]?.(args) ?? stdout;
    return { stdout, stderr: "", exitCode: 0 };
  };

  spawn: Spawner = async (file, args) => {
    this.spawned.push([file, ...args]);
    const pid = this.nextPid++;
    this.live.set(pid, file);
    // nbdfuse: serve the file and write the pidfile
    const fuseFile = args.find((a) => a.endsWith("/disk")) as string;
    fs.writeFileSync(fuseFile, "");
    fs.writeFileSync(args[args.indexOf("-P") + 1], `${pid}\n`);
    this.mounts.push(path.dirname(fuseFile));
    this.mountPids.set(path.dirname(fuseFile), pid);
    this.syncMounts();
    return pid;
  };

  /** Which nbdfuse serves which mount. */
  readonly mountPids = new Map<string, number>();
  /** What umount of one nbdfuse mount does: its file goes, its nbdfuse exits. */
  unmount(dir: string): void {
    fs.rmSync(path.join(dir, "disk"), { force: true });
    this.mounts = this.mounts.filter((m) => m !== dir);
    this.syncMounts();
    this.live.delete(this.mountPids.get(dir) as number);
  }

  mounts: string[] = [];
  /** What umount does to an nbdfuse mount: the file goes, nbdfuse exits. */
  unmountAll(alsoPids: number[] = [...this.live.keys()]): void {
    for (const m of this.mounts) fs.rmSync(path.join(m, "disk"), { force: true });
    this.mounts = [];
    this.syncMounts();
    for (const p of alsoPids) this.live.delete(p);
  }

  syncMounts(): void {
    this.setMounts(this.mounts.map((m) => `nbdfuse ${m} fuse rw 0 0`));
  }

  processes: ProcessTable = {
    argv: async (pid) => (this.live.has(pid) ? [this.live.get(pid) as string] : undefined),
    list: async () => [...this.live].map(([pid, name]) => ({ pid, argv: [name] })),
    kill: (pid) => void this.live.delete(pid),
  };

  options_(extra: Record<string, unknown> = {}) {
    return { stateDir: this.stateDir, run: this.run, spawn: this.spawn, processes: this.processes, fsRoot: this.root, waitMs: 2_000, sleep: async (ms: number) => void this.slept.push(ms), capabilities: caps, hostname: "h1", ...extra };
  }

  cleanup(): void {
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

let h: FakeHost;
beforeEach(() => {
  h = new FakeHost();
});
afterEach(() => h.cleanup());

const iscsiConn = (o: Partial<Connection> = {}): Connection => ({
  volumeId: "vol1",
  protocol: "iscsi",
  portals: ["10.0.0.5:3260"],
  targetIqn: "iqn.2024-01.io.sds:vol1",
  targetLun: 1,
  authMethod: "CHAP",
  authUsername: "u1",
  authPassword: PASSWORD,
  readOnly: false,
  ...o,
}) as Connection;
const nbdConn = (o: Partial<Connection> = {}): Connection => ({ volumeId: "vol2", protocol: "nbd", portals: ["127.0.0.1:10809"], exportName: "vol2", readOnly: false, ...o }) as Connection;

describe("probe and factory", () => {
  test("kernel iSCSI needs iscsiadm on PATH and iscsi_tcp loaded; kernel NBD needs /sys/block/nbd0", () => {
    expect(probe(h.root, "")).toMatchObject({ iscsiKernel: false, nbdKernel: false });
    h.touch("usr/sbin/iscsiadm");
    fs.chmodSync(path.join(h.root, "usr/sbin/iscsiadm"), 0o755);
    expect(probe(h.root, "").iscsiKernel).toBe(false); // module not loaded
    fs.mkdirSync(path.join(h.root, "sys/module/iscsi_tcp"), { recursive: true });
    expect(probe(h.root, "").iscsiKernel).toBe(true);
    fs.mkdirSync(path.join(h.root, "sys/block/nbd0"), { recursive: true });
    expect(probe(h.root, "").nbdKernel).toBe(true);
  });

  test("connectorFor picks kernel or userspace from the probe, and options force userspace", () => {
    const kernel = { iscsiKernel: true, nbdKernel: true, userspace: true };
    expect((connectorFor("iscsi", h.options_({ capabilities: kernel })) as IscsiConnector).mode).toBe("kernel");
    expect(connectorFor("iscsi", h.options_({ capabilities: kernel })).getSearchPath()).toBe("/dev/disk/by-path");
    expect(connectorFor("nbd", h.options_({ capabilities: kernel })).getSearchPath()).toBe("/dev");
    expect((connectorFor("nbd", h.options_({ capabilities: kernel, mode: "userspace" })) as NbdConnector).mode).toBe("userspace");
    expect(connectorFor("nbd", h.options_()).getSearchPath()).toBe(h.stateDir);
    expect(connectorFor("iscsi", h.options_()).getSearchPath()).toBe(h.stateDir);
    expect(connectorFor("local", h.options_())).toBeInstanceOf(LocalConnector);
  });

  test("connector properties: initiator from /etc/iscsi/initiatorname.iscsi, else our own", async () => {
    const c = connectorFor("iscsi", h.options_());
    expect(await c.getConnectorProperties()).toEqual({ initiator: "iqn.2026-11.io.sds:initiator:h1", ip: "127.0.0.1", hostname: "h1", multipath: false, capabilities: caps });
    h.touch("etc/iscsi/initiatorname.iscsi", "## comment\nInitiatorName=iqn.1993-08.org.debian:01:abc\n");
    expect((await c.getConnectorProperties()).initiator).toBe("iqn.1993-08.org.debian:01:abc");
  });

  test("attachLoop retries EBUSY/EAGAIN from a concurrent losetup with backoff, then gives the device", async () => {
    const host = new Host(h.options_());
    const busy = "losetup: /pool/a.img: failed to set up loop device: Device or resource busy";
    h.flaky.set("losetup -f", [busy, "losetup: /pool/a.img: failed to set up loop device: Resource temporarily unavailable"]);
    expect(await host.attachLoop("/pool/a.img", true)).toBe("/dev/loop7");
    expect(h.calls).toEqual([
      ["losetup", "-f", "--show", "--read-only", "/pool/a.img"],
      ["losetup", "-f", "--show", "--read-only", "/pool/a.img"],
      ["losetup", "-f", "--show", "--read-only", "/pool/a.img"],
    ]);
    expect(h.slept).toEqual([100, 200]);
    // at an explicit device: losetup [--read-only] /dev/loopN FILE
    h.calls.length = 0;
    h.flaky.set("losetup /dev/loop3", [busy]);
    expect(await host.attachLoop("/pool/b.img", false, "/dev/loop3")).toBe("/dev/loop3");
    expect(h.calls).toEqual([
      ["losetup", "/dev/loop3", "/pool/b.img"],
      ["losetup", "/dev/loop3", "/pool/b.img"],
    ]);
    expect(h.loops).toContainEqual({ name: "/dev/loop3", file: "/pool/b.img", ro: false });
  });

  test("attachLoop gives up after five tries, and does not retry other errors", async () => {
    const host = new Host(h.options_());
    h.flaky.set("losetup -f", Array(9).fill("losetup: failed to set up loop device: Device or resource busy"));
    await expect(host.attachLoop("/pool/a.img", false)).rejects.toThrow(/Device or resource busy/);
    expect(h.calls).toHaveLength(5);
    expect(h.slept).toEqual([100, 200, 400, 800]);
    h.calls.length = 0;
    h.slept.length = 0;
    h.flaky.set("losetup -f", ["losetup: /pool/none.img: failed to set up loop device: No such file or directory"]);
    await expect(host.attachLoop("/pool/none.img", false)).rejects.toThrow(/No such file/);
    expect(h.calls).toHaveLength(1);
    expect(h.slept).toEqual([]);
    await expect(host.attachLoop("/pool/a.img", false, "/dev/sda")).rejects.toThrow(/not a loop device/);
  });

  test("parseLosetupJson strips ' (deleted)' and reads ro", () => {
    expect(parseLosetupJson('{"loopdevices":[{"name":"/dev/loop1","back-file":"/a/b (deleted)","ro":true}]}')).toEqual([{ name: "/dev/loop1", backFile: "/a/b", ro: true }]);
    expect(parseLosetupJson("")).toEqual([]);
  });
});

describe("iSCSI, kernel initiator", () => {
  const kernelOpts = () => h.options_({ mode: "kernel" });
  const dev = "/dev/disk/by-path/ip-10.0.0.5:3260-iscsi-iqn.2024-01.io.sds:vol1-lun-1";

  test("connect: discovery, CHAP on the node (password only as a masked secret), login, wait for the by-path device", async () => {
    h.touch(dev);
    const c = new IscsiConnector(kernelOpts());
    expect(await c.connectVolume(iscsiConn())).toEqual({ path: dev });
    const node = "iscsiadm -m node -T iqn.2024-01.io.sds:vol1 -p 10.0.0.5:3260";
    expect(h.calls.map((a) => a.join(" "))).toEqual([
      "iscsiadm -m discovery -t sendtargets -p 10.0.0.5:3260",
      `${node} --op update -n node.session.timeo.replacement_timeout -v 15`,
      `${node} --op update -n node.session.auth.authmethod -v CHAP`,
      `${node} --op update -n node.session.auth.username -v u1`,
      `${node} --op update -n node.session.auth.password -v ${PASSWORD}`,
      `${node} --login`,
    ]);
    expect(h.options[4]?.secrets).toEqual([PASSWORD]);
    expect(fs.readFileSync(new RecordStore(h.stateDir).file("vol1", "rw"), "utf8")).not.toContain(PASSWORD);
    // connected already: nothing runs again
    h.calls.length = 0;
    expect(await c.connectVolume(iscsiConn())).toEqual({ path: dev });
    expect(h.calls).toEqual([]);
  });

  test("a failing CHAP update names no password in the error", async () => {
    h.failures.set("iscsiadm -m node -T iqn.2024-01.io.sds:vol1 -p 10.0.0.5:3260 --op update -n node.session.auth.password", "exit 6");
    const err = (await new IscsiConnector(kernelOpts()).connectVolume(iscsiConn()).catch((e: Error) => e)) as Error;
    expect(err.message).toContain("node.session.auth.password -v ***");
    expect(err.message).not.toContain(PASSWORD);
  });

  test("read-only: blockdev --setro; disconnect logs out once, twice is success", async () => {
    h.touch(dev);
    const c = new IscsiConnector(kernelOpts());
    await c.connectVolume(iscsiConn({ readOnly: true, authMethod: undefined }));
    expect(h.calls.map((a) => a.join(" "))).toEqual([
      "iscsiadm -m discovery -t sendtargets -p 10.0.0.5:3260",
      "iscsiadm -m node -T iqn.2024-01.io.sds:vol1 -p 10.0.0.5:3260 --op update -n node.session.timeo.replacement_timeout -v 15",
      "iscsiadm -m node -T iqn.2024-01.io.sds:vol1 -p 10.0.0.5:3260 --login",
      `blockdev --setro ${dev}`,
    ]);
    h.calls.length = 0;
    await c.disconnectVolume(iscsiConn({ readOnly: true }));
    await c.disconnectVolume(iscsiConn({ readOnly: true }));
    expect(h.calls.map((a) => a.join(" "))).toEqual(["iscsiadm -m node -T iqn.2024-01.io.sds:vol1 -p 10.0.0.5:3260 --logout"]);
  });

  test("iscsiadm's exit codes, not its words: 15 on login is an existing session, 21 on logout no session; other codes fail", async () => {
    h.touch(dev);
    const c = new IscsiConnector(kernelOpts());
    h.failures.set("iscsiadm -m node -T iqn.2024-01.io.sds:vol1 -p 10.0.0.5:3260 --login", "exit 15");
    expect(await c.connectVolume(iscsiConn())).toEqual({ path: dev });
    h.failures.clear();
    h.failures.set("iscsiadm -m node -T iqn.2024-01.io.sds:vol1 -p 10.0.0.5:3260 --logout", "exit 21");
    await c.disconnectVolume(iscsiConn());
    // a stderr that merely mentions "exit 21" is no such exit
    await c.connectVolume(iscsiConn());
    h.failures.set("iscsiadm -m node -T iqn.2024-01.io.sds:vol1 -p 10.0.0.5:3260 --logout", "iscsiadm: could not logout (exit 21 is not this)");
    await expect(c.disconnectVolume(iscsiConn())).rejects.toMatchObject({ code: "COMMAND_FAILED", message: expect.stringMatching(/iscsiadm --logout/) });
  });

  test("no logout while another record uses the same target", async () => {
    h.touch(dev);
    const c = new IscsiConnector(kernelOpts());
    await c.connectVolume(iscsiConn());
    await c.connectVolume(iscsiConn({ volumeId: "vol9" }));
    h.calls.length = 0;
    await c.disconnectVolume(iscsiConn());
    expect(h.calls).toEqual([]);
    await c.disconnectVolume(iscsiConn({ volumeId: "vol9" }));
    expect(h.calls.map((a) => a.at(-1))).toEqual(["--logout"]);
  });
});

describe("NBD, kernel client", () => {
  test("connect uses the first free /dev/nbdX; disconnect runs nbd-client -d only while connected", async () => {
    h.touch("sys/block/nbd0/pid", "1"); // nbd0 busy
    fs.mkdirSync(path.join(h.root, "sys/block/nbd1"), { recursive: true });
    const c = new NbdConnector(h.options_({ mode: "kernel" }));
    expect(await c.connectVolume(nbdConn({ readOnly: true }))).toEqual({ path: "/dev/nbd1" });
    expect(h.calls).toEqual([["nbd-client", "127.0.0.1", "10809", "/dev/nbd1", "-N", "vol2", "-readonly"]]);
    h.touch("sys/block/nbd1/pid", "2");
    expect(await c.getVolumePaths(nbdConn())).toEqual([{ volumeId: "vol2", path: "/dev/nbd1", protocol: "nbd", via: "kernel" }]);
    h.calls.length = 0;
    await c.disconnectVolume(nbdConn({ readOnly: true }));
    expect(h.calls).toEqual([["nbd-client", "-d", "/dev/nbd1"]]);
    fs.rmSync(path.join(h.root, "sys/block/nbd1/pid"));
    h.calls.length = 0;
    await c.disconnectVolume(nbdConn({ readOnly: true }));
    expect(h.calls).toEqual([]);
  });
});

describe("NBD, kernel client: extendVolume reconnects on the same /dev/nbdX", () => {
  test("not in use: nbd-client -d, wait until free, nbd-client again on that device, then the size", async () => {
    fs.mkdirSync(path.join(h.root, "sys/block/nbd0"), { recursive: true });
    h.on["nbd-client"] = (args) => {
      if (args[0] === "-d") fs.rmSync(path.join(h.root, "sys/block", path.basename(args[1]), "pid"));
      else h.touch(`sys/block/${path.basename(args[2])}/pid`, "9");
    };
    const c = new NbdConnector(h.options_({ mode: "kernel" }));
    await c.connectVolume(nbdConn({ readOnly: true }));
    h.calls.length = 0;
    expect(await c.extendVolume(nbdConn({ readOnly: true }))).toBe(32 * 1024 * 1024);
    expect(h.calls).toEqual([
      ["nbd-client", "-d", "/dev/nbd0"],
      ["nbd-client", "127.0.0.1", "10809", "/dev/nbd0", "-N", "vol2", "-readonly"],
      ["blockdev", "--getsize64", "/dev/nbd0"],
    ]);
    expect(await c.getVolumePaths(nbdConn())).toEqual([{ volumeId: "vol2", path: "/dev/nbd0", protocol: "nbd", via: "kernel" }]);
  });

  test("in use: INVALID_STATE naming the device and the next reconnect; nothing runs", async () => {
    fs.mkdirSync(path.join(h.root, "sys/block/nbd0"), { recursive: true });
    const c = new NbdConnector(h.options_({ mode: "kernel" }));
    await c.connectVolume(nbdConn());
    h.touch("sys/block/nbd0/pid", "9");
    h.setMounts(["/dev/nbd0 /srv/data ext4 rw 0 0"]);
    h.calls.length = 0;
    const err = (await c.extendVolume(nbdConn()).catch((e: unknown) => e)) as UserError;
    expect(err).toMatchObject({ code: "INVALID_STATE" });
    expect(err.message).toMatch(/\/dev\/nbd0 is mounted on \/srv\/data.*after the next reconnect/);
    expect(h.calls).toEqual([]);
  });

  test("not connected, or its device gone: INVALID_STATE", async () => {
    fs.mkdirSync(path.join(h.root, "sys/block/nbd0"), { recursive: true });
    const c = new NbdConnector(h.options_({ mode: "kernel" }));
    await expect(c.extendVolume(nbdConn())).rejects.toMatchObject({ code: "INVALID_STATE", message: expect.stringMatching(/not connected/) });
    await c.connectVolume(nbdConn()); // no /sys/block/nbd0/pid: the client went away
    await expect(c.extendVolume(nbdConn())).rejects.toMatchObject({ code: "INVALID_STATE", message: expect.stringMatching(/lost its device \/dev\/nbd0/) });
  });
});

describe("NBD, userspace (nbdfuse + loop)", () => {
  const mnt = () => path.join(h.stateDir, "nbd/mnt/vol2-ro");

  test("connect: nbdfuse -r -P <pidfile> <mnt>/disk nbd://host:port/export, then losetup --read-only", async () => {
    const c = new NbdConnector(h.options_());
    expect(await c.connectVolume(nbdConn({ readOnly: true }))).toEqual({ path: "/dev/loop7" });
    expect(h.spawned).toEqual([["nbdfuse", "-r", "-P", attempt(path.join(h.stateDir, "nbd/run/vol2-ro"), ".nbdfuse.pid"), `${mnt()}/disk`, "nbd://127.0.0.1:10809/vol2"]]);
    expect(h.calls).toEqual([["losetup", "-f", "--show", "--read-only", "--direct-io=on", `${mnt()}/disk`]]);
    const rec = new RecordStore(h.stateDir).read("vol2", "ro");
    expect(rec).toMatchObject({ device: "/dev/loop7", backingFile: `${mnt()}/disk`, mountDir: mnt(), nbdfusePid: 4000, via: "userspace" });
  });

  test("idempotence from the record: a live loop is returned as is; a dead one is torn down and made again", async () => {
    const c = new NbdConnector(h.options_());
    await c.connectVolume(nbdConn({ readOnly: true }));
    h.calls.length = 0;
    expect(await c.connectVolume(nbdConn({ readOnly: true }))).toEqual({ path: "/dev/loop7" });
    expect(h.calls).toEqual([["losetup", "--json", "--list"]]);
    expect(h.spawned).toHaveLength(1);
    // the loop device went away behind our back
    h.loops = [];
    h.on.umount = () => h.unmountAll(); // nbdfuse exits when unmounted
    expect(await c.connectVolume(nbdConn({ readOnly: true }))).toEqual({ path: "/dev/loop8" });
    expect(h.spawned).toHaveLength(2);
    expect(h.calls.map((a) => a.join(" "))).toContain(`umount -l ${mnt()}`);
  });

  test("disconnect in reverse order: losetup -d, umount, nbdfuse gone, folder removed; twice is success", async () => {
    const c = new NbdConnector(h.options_());
    await c.connectVolume(nbdConn({ readOnly: true }));
    h.on.umount = () => h.unmountAll();
    h.calls.length = 0;
    await c.disconnectVolume(nbdConn({ readOnly: true }));
    // the last listing: the device let go of its file (the kernel may clear it later, at its last close)
    expect(h.calls.map((a) => a.join(" "))).toEqual(["losetup --json --list", "losetup --json --list", "losetup -d /dev/loop7", "losetup --json --list", `umount ${mnt()}`]);
    expect(fs.existsSync(mnt())).toBe(false);
    expect(new RecordStore(h.stateDir).list()).toEqual([]);
    h.calls.length = 0;
    await c.disconnectVolume(nbdConn({ readOnly: true }));
    expect(h.calls).toEqual([]);
  });

  test("a failed teardown keeps going, reports every step, keeps the record, and getVolumePaths still shows the loop", async () => {
    const c = new NbdConnector(h.options_({ waitMs: 200 }));
    await c.connectVolume(nbdConn());
    h.failures.set("losetup -d", "exit 1");
    h.failures.set("umount", "exit 32");
    h.processes.kill = () => undefined; // nbdfuse does not exit either (still mounted)
    const err = (await c.disconnectVolume(nbdConn(), { force: true }).catch((e: Error) => e)) as Error;
    expect(err.message).toMatch(/losetup -d \/dev\/loop7.*umount .*stop nbdfuse 4000/);
    expect(h.calls.map((a) => a[0])).toContain("umount"); // kept going after losetup -d failed
    expect(await c.getVolumePaths(nbdConn())).toEqual([{ volumeId: "vol2", path: "/dev/loop7", protocol: "nbd", via: "userspace" }]);
  });

  test("getAllVolumePaths: records of this protocol plus orphan loops over files in <stateDir>/nbd", async () => {
    const c = new NbdConnector(h.options_());
    await c.connectVolume(nbdConn());
    h.loops.push({ name: "/dev/loop3", file: path.join(h.stateDir, "nbd/mnt/old-rw/disk"), ro: false });
    h.loops.push({ name: "/dev/loop4", file: "/somewhere/else.img", ro: false });
    expect(await c.getAllVolumePaths()).toEqual([
      { volumeId: "vol2", path: "/dev/loop7", protocol: "nbd", via: "userspace" },
      { path: "/dev/loop3", protocol: "nbd", via: "userspace" },
    ]);
  });
});

describe("NBD, userspace: extendVolume moves the same loop device to a new nbdfuse", () => {
  const run = () => path.join(h.stateDir, "nbd/run");
  const mnt = (slot = "") => path.join(h.stateDir, `nbd/mnt/vol2-ro${slot}`);

  test("new nbdfuse in slot .1, losetup -d, losetup --read-only /dev/loop7 <new file>, old nbdfuse unmounted; next time back to slot 0", async () => {
    const c = new NbdConnector(h.options_());
    await c.connectVolume(nbdConn({ readOnly: true }));
    h.on.umount = (args) => h.unmount(args.at(-1) as string);
    h.calls.length = 0;
    expect(await c.extendVolume(nbdConn({ readOnly: true }))).toBe(32 * 1024 * 1024);
    expect(h.spawned[1]).toEqual(["nbdfuse", "-r", "-P", attempt(`${run()}/vol2-ro.1`, ".nbdfuse.pid"), `${mnt(".1")}/disk`, "nbd://127.0.0.1:10809/vol2"]);
    expect(h.calls).toEqual([
      ["losetup", "--json", "--list"],
      ["losetup", "-d", "/dev/loop7"],
      ["losetup", "--read-only", "--direct-io=on", "/dev/loop7", `${mnt(".1")}/disk`],
      ["umount", mnt()],
      ["blockdev", "--getsize64", "/dev/loop7"],
    ]);
    const rec = new RecordStore(h.stateDir).read("vol2", "ro");
    expect(rec).toMatchObject({ device: "/dev/loop7", backingFile: `${mnt(".1")}/disk`, mountDir: mnt(".1"), nbdfusePid: 4001 });
    expect(rec?.extraLayers).toBeUndefined();
    expect(fs.existsSync(mnt())).toBe(false);
    expect([...h.live.keys()]).toEqual([4001]);
    expect(h.loops).toEqual([{ name: "/dev/loop7", file: `${mnt(".1")}/disk`, ro: true }]);
    // again: back to slot 0
    h.calls.length = 0;
    await c.extendVolume(nbdConn({ readOnly: true }));
    expect(h.spawned[2][4]).toBe(`${mnt()}/disk`);
    expect(h.calls.map((a) => a.join(" "))).toContain(`umount ${mnt(".1")}`);
    expect(new RecordStore(h.stateDir).read("vol2", "ro")).toMatchObject({ device: "/dev/loop7", mountDir: mnt(), nbdfusePid: 4002 });
    // and disconnect still finds everything
    h.calls.length = 0;
    await c.disconnectVolume(nbdConn({ readOnly: true }));
    expect(h.loops).toEqual([]);
    expect(h.live.size).toBe(0);
    expect(new RecordStore(h.stateDir).list()).toEqual([]);
  });

  test("in use: INVALID_STATE naming the device and the next reconnect; nothing started or detached", async () => {
    const c = new NbdConnector(h.options_());
    await c.connectVolume(nbdConn());
    h.setMounts([...h.mounts.map((m) => `nbdfuse ${m} fuse rw 0 0`), "/dev/loop7 /mnt/x ext4 rw 0 0"]);
    h.calls.length = 0;
    await expect(c.extendVolume(nbdConn())).rejects.toThrow(/\/dev\/loop7 is mounted on \/mnt\/x; the new size shows after the next reconnect/);
    expect(h.spawned).toHaveLength(1);
    expect(h.calls).toEqual([["losetup", "--json", "--list"]]);
  });

  test("a new nbdfuse that fails leaves the live connection untouched and nothing of itself", async () => {
    const c = new NbdConnector(h.options_({ waitMs: 300 }));
    await c.connectVolume(nbdConn());
    const before = new RecordStore(h.stateDir).read("vol2", "rw");
    // this nbdfuse dies at once: it never serves its file
    h.spawn = async (file, args) => {
      h.spawned.push([file, ...args]);
      return h.nextPid++;
    };
    const c2 = new NbdConnector(h.options_({ waitMs: 300 }));
    await expect(c2.extendVolume(nbdConn())).rejects.toThrow(/nbdfuse exited before serving/);
    expect(h.calls.filter((a) => a[1] === "-d")).toEqual([]);
    expect(new RecordStore(h.stateDir).read("vol2", "rw")).toEqual(before);
    expect(fs.existsSync(path.join(h.stateDir, "nbd/mnt/vol2-rw.1"))).toBe(false);
    expect(await c.getVolumePaths(nbdConn())).toEqual([{ volumeId: "vol2", path: "/dev/loop7", protocol: "nbd", via: "userspace" }]);
  });

  test("a loop device taken meanwhile: the volume goes to another device, recorded, and the error names it", async () => {
    const c = new NbdConnector(h.options_());
    await c.connectVolume(nbdConn());
    h.on.umount = (args) => h.unmount(args.at(-1) as string);
    h.failures.set("losetup --direct-io=on /dev/loop7", "losetup: /dev/loop7: failed to set up loop device: Device or resource busy");
    const err = (await c.extendVolume(nbdConn()).catch((e: unknown) => e)) as BackendError;
    expect(err).toBeInstanceOf(BackendError);
    expect(err.message).toMatch(/now shows 33554432 bytes, but at \/dev\/loop8: \/dev\/loop7 was taken/);
    expect(h.slept).toEqual([100, 200, 400, 800]);
    expect(new RecordStore(h.stateDir).read("vol2", "rw")).toMatchObject({ device: "/dev/loop8", mountDir: path.join(h.stateDir, "nbd/mnt/vol2-rw.1") });
    expect(await c.getVolumePaths(nbdConn())).toEqual([{ volumeId: "vol2", path: "/dev/loop8", protocol: "nbd", via: "userspace" }]);
  });
});

describe("iSCSI, kernel initiator: extendVolume rescans live", () => {
  test("iscsiadm --rescan, 1 into the sd device's rescan file, then the size; works while mounted", async () => {
    const dev = "/dev/disk/by-path/ip-10.0.0.5:3260-iscsi-iqn.2024-01.io.sds:vol1-lun-1";
    h.touch("dev/sdc");
    fs.mkdirSync(path.join(h.root, "dev/disk/by-path"), { recursive: true });
    fs.symlinkSync("../../sdc", path.join(h.root, dev));
    h.touch("sys/block/sdc/device/rescan", "");
    const c = new IscsiConnector(h.options_({ mode: "kernel" }));
    await c.connectVolume(iscsiConn());
    h.setMounts([`${dev} /srv/db xfs rw 0 0`]);
    h.calls.length = 0;
    expect(await c.extendVolume(iscsiConn())).toBe(32 * 1024 * 1024);
    expect(h.calls).toEqual([
      ["iscsiadm", "-m", "node", "-T", "iqn.2024-01.io.sds:vol1", "-p", "10.0.0.5:3260", "--rescan"],
      ["blockdev", "--getsize64", dev],
    ]);
    expect(fs.readFileSync(path.join(h.root, "sys/block/sdc/device/rescan"), "utf8")).toBe("1");
  });
});

describe("iSCSI, userspace: extendVolume logs in again through a new qemu-nbd", () => {
  test("new qemu-nbd and nbdfuse in slot .1 (password in a file again), loop moved, old qemu-nbd stopped", async () => {
    const run = path.join(h.stateDir, "iscsi/run");
    let nextQemu = 777;
    h.on["qemu-nbd"] = (args) => {
      fs.writeFileSync(args[args.indexOf("--pid-file") + 1], `${nextQemu}\n`);
      h.live.set(nextQemu++, "qemu-nbd");
    };
    h.on.umount = (args) => h.unmount(args.at(-1) as string);
    const c = new IscsiConnector(h.options_({ initiator: "iqn.2024-01.io.sds:h1" }));
    await c.connectVolume(iscsiConn());
    h.calls.length = 0;
    expect(await c.extendVolume(iscsiConn())).toBe(32 * 1024 * 1024);
    expect(h.calls[1].slice(0, 7)).toEqual(["qemu-nbd", "--fork", "--persistent", "--pid-file", attempt(`${run}/vol1-rw.1`, ".qemu-nbd.pid"), "-k", attempt(`${run}/vol1-rw.1`, ".sock")]);
    expect(h.calls[1].join(" ")).not.toContain(PASSWORD);
    expect(h.spawned[1]).toEqual(["nbdfuse", "-P", attempt(`${run}/vol1-rw.1`, ".nbdfuse.pid"), path.join(h.stateDir, "iscsi/mnt/vol1-rw.1/disk"), "--unix", attempt(`${run}/vol1-rw.1`, ".sock")]);
    expect(h.calls.slice(2).map((a) => a.join(" "))).toEqual([
      "losetup -d /dev/loop7",
      `losetup --direct-io=on /dev/loop7 ${path.join(h.stateDir, "iscsi/mnt/vol1-rw.1/disk")}`,
      `umount ${path.join(h.stateDir, "iscsi/mnt/vol1-rw")}`,
      "blockdev --getsize64 /dev/loop7",
    ]);
    expect([...h.live.keys()].sort()).toEqual([4001, 778]);
    expect(new RecordStore(h.stateDir).read("vol1", "rw")).toMatchObject({ device: "/dev/loop7", qemuNbdPid: 778, socket: attempt(`${run}/vol1-rw.1`, ".sock"), portal: "10.0.0.5:3260" });
    expect(fs.readdirSync(run).filter((f) => f.endsWith(".secret"))).toEqual([]);
  });

  test("CHAP without the password cannot log in again: refused before anything runs", async () => {
    h.on["qemu-nbd"] = (args) => {
      fs.writeFileSync(args[args.indexOf("--pid-file") + 1], "777\n");
      h.live.set(777, "qemu-nbd");
    };
    const c = new IscsiConnector(h.options_());
    await c.connectVolume(iscsiConn());
    h.calls.length = 0;
    await expect(c.extendVolume(iscsiConn({ authPassword: undefined }))).rejects.toMatchObject({ code: "INVALID_INPUT" });
    expect(h.calls.filter((a) => a[0] !== "losetup" || a[1] !== "--json")).toEqual([]);
  });
});

describe("iSCSI, userspace (qemu-nbd/libiscsi + nbdfuse + loop)", () => {
  test("each helper is recorded before it starts, under names of its attempt that a retry never reuses; disconnect forgets them", async () => {
    const daemons = new DaemonRecords(path.join(h.stateDir, "daemons"));
    /** At each start: the records naming the file the helper is about to write its pid to. */
    const recordedAtStart: string[] = [];
    const pidFiles: string[] = [];
    let nextQemu = 777;
    h.on["qemu-nbd"] = (args) => {
      const pidFile = args[args.indexOf("--pid-file") + 1];
      pidFiles.push(pidFile);
      recordedAtStart.push(...daemons.list("qemu-nbd").filter((r) => r.pidFile === pidFile).map((r) => r.kind));
      fs.writeFileSync(pidFile, `${nextQemu}\n`);
      h.live.set(nextQemu++, "qemu-nbd");
    };
    const spawn = h.spawn;
    h.spawn = async (file, args, o) => {
      const pidFile = args[args.indexOf("-P") + 1];
      pidFiles.push(pidFile);
      recordedAtStart.push(...daemons.list("nbdfuse").filter((r) => r.pidFile === pidFile).map((r) => r.kind));
      return spawn(file, args, o);
    };
    const c = new IscsiConnector(h.options_({ initiator: "iqn.2024-01.io.sds:h1" }));
    await c.connectVolume(iscsiConn());
    expect(recordedAtStart).toEqual(["qemu-nbd", "nbdfuse"]);
    expect(daemons.list().map((r) => [r.kind, r.pid])).toEqual([["nbdfuse", 4000], ["qemu-nbd", 777]]);
    // A retry of the same connection (its first attempt's pieces forgotten, as after a crash) names files of its own.
    new RecordStore(h.stateDir).remove("vol1", "rw");
    h.unmountAll([]);
    await c.connectVolume(iscsiConn());
    expect(new Set(pidFiles).size).toBe(4);
    expect(daemons.list()).toHaveLength(4);
    // A disconnect forgets the records of the helpers it stopped (the first attempt's stay: the reaper's).
    h.on.umount = (args) => h.unmount(args.at(-1) as string);
    await c.disconnectVolume(iscsiConn());
    expect(daemons.list().map((r) => [r.kind, r.pid])).toEqual([["nbdfuse", 4000], ["qemu-nbd", 777]]);
  });

  test("qemu-nbd gets the CHAP password in a 0600 file (not argv) that is gone afterwards; nbdfuse uses its unix socket", async () => {
    const run = path.join(h.stateDir, "iscsi/run");
    let secretSeen: { mode: number; content: string } | undefined;
    h.on["qemu-nbd"] = (args) => {
      const obj = args[args.indexOf("--object") + 1];
      const file = /file=(.*)$/.exec(obj)?.[1] as string;
      secretSeen = { mode: fs.statSync(file).mode & 0o777, content: fs.readFileSync(file, "utf8") };
      fs.writeFileSync(args[args.indexOf("--pid-file") + 1], "777\n");
      h.live.set(777, "qemu-nbd");
    };
    const c = new IscsiConnector(h.options_({ initiator: "iqn.2024-01.io.sds:h1" }));
    expect(await c.connectVolume(iscsiConn({ readOnly: true }))).toEqual({ path: "/dev/loop7" });
    expect(h.calls[0]).toEqual([
      "qemu-nbd",
      "--fork",
      "--persistent",
      "--pid-file",
      attempt(`${run}/vol1-ro`, ".qemu-nbd.pid"),
      "-k",
      attempt(`${run}/vol1-ro`, ".sock"),
      "-r",
      "--object",
      attempt(`secret,id=sdschap,file=${run}/vol1-ro`, ".secret"),
      "--image-opts",
      "driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=10.0.0.5:3260,file.target=iqn.2024-01.io.sds:vol1,file.lun=1,file.initiator-name=iqn.2024-01.io.sds:h1,file.user=u1,file.password-secret=sdschap",
    ]);
    expect(h.calls[0].join(" ")).not.toContain(PASSWORD);
    expect(secretSeen).toEqual({ mode: 0o600, content: PASSWORD });
    expect(fs.readdirSync(run).filter((f) => f.endsWith(".secret"))).toEqual([]);
    expect(h.spawned).toEqual([["nbdfuse", "-r", "-P", attempt(`${run}/vol1-ro`, ".nbdfuse.pid"), path.join(h.stateDir, "iscsi/mnt/vol1-ro/disk"), "--unix", attempt(`${run}/vol1-ro`, ".sock")]]);
    expect(h.calls[1]).toEqual(["losetup", "-f", "--show", "--read-only", "--direct-io=on", path.join(h.stateDir, "iscsi/mnt/vol1-ro/disk")]);
    expect(new RecordStore(h.stateDir).read("vol1", "ro")).toMatchObject({ qemuNbdPid: 777, socket: attempt(`${run}/vol1-ro`, ".sock") });
  });

  test("a failed qemu-nbd (bad CHAP) removes the secret file and its daemon record, and starts no nbdfuse", async () => {
    h.failures.set("qemu-nbd", "exit 1");
    const c = new IscsiConnector(h.options_());
    await expect(c.connectVolume(iscsiConn())).rejects.toThrow(BackendError);
    expect(fs.readdirSync(path.join(h.stateDir, "iscsi/run"))).toEqual([]);
    expect(new DaemonRecords(path.join(h.stateDir, "daemons")).list()).toEqual([]);
    expect(h.spawned).toEqual([]);
  });

  test("disconnect stops qemu-nbd after nbdfuse", async () => {
    h.on["qemu-nbd"] = (args) => {
      fs.writeFileSync(args[args.indexOf("--pid-file") + 1], "777\n");
      h.live.set(777, "qemu-nbd");
    };
    h.on.umount = () => h.unmountAll([4000]);
    const killed: number[] = [];
    const kill = h.processes.kill;
    h.processes.kill = (pid, sig) => {
      killed.push(pid);
      kill(pid, sig);
    };
    const c = new IscsiConnector(h.options_());
    await c.connectVolume(iscsiConn());
    await c.disconnectVolume(iscsiConn());
    expect(killed).toEqual([777]);
    expect(h.live.size).toBe(0);
    expect(new RecordStore(h.stateDir).list()).toEqual([]);
  });
});

describe("local (loop device over the volume file)", () => {
  const file = "/pool/vol3.img";
  const conn = (o: Partial<Connection> = {}): Connection => ({ volumeId: "vol3", protocol: "local", portals: [], exportName: file, readOnly: false, ...o }) as Connection;

  test("connect: losetup -f --show [--read-only] FILE; connect again reuses the record's live loop", async () => {
    const c = new LocalConnector(h.options_());
    expect(await c.connectVolume(conn({ readOnly: true }))).toEqual({ path: "/dev/loop7" });
    expect(h.calls).toEqual([["losetup", "-f", "--show", "--read-only", file]]);
    h.calls.length = 0;
    expect(await c.connectVolume(conn({ readOnly: true }))).toEqual({ path: "/dev/loop7" });
    expect(h.calls).toEqual([["losetup", "--json", "--list"]]);
    // rw is another connection
    expect(await c.connectVolume(conn())).toEqual({ path: "/dev/loop8" });
  });

  test("a device in use is a DeviceBusyError naming the device and its holder (INVALID_STATE, as before)", async () => {
    const c = new LocalConnector(h.options_());
    await c.connectVolume(conn());
    h.setMounts(["/dev/loop7 /mnt/x ext4 rw 0 0"]);
    const err = await c.disconnectVolume(conn()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeviceBusyError);
    expect(err).toMatchObject({ code: "INVALID_STATE", device: "/dev/loop7", holder: "/dev/loop7 is mounted on /mnt/x" });
  });

  test("attachLoop retries on losetup's stderr, not on words in its argv", async () => {
    const host = new Host(h.options_());
    h.flaky.set("losetup -f", ["losetup: failed to set up loop device: No such file or directory"]);
    await expect(host.attachLoop("/pool/Device or resource busy.img", false)).rejects.toBeInstanceOf(CommandFailedError);
    expect(h.slept).toEqual([]);
  });

  test("a record whose loop now maps another file is not reused", async () => {
    const c = new LocalConnector(h.options_());
    await c.connectVolume(conn());
    h.loops = [{ name: "/dev/loop7", file: "/other.img", ro: false }];
    expect(await c.connectVolume(conn())).toEqual({ path: "/dev/loop8" });
  });

  test("disconnect refuses a mounted device without force; force detaches; a loop made outside the record is still reported", async () => {
    const c = new LocalConnector(h.options_());
    await c.connectVolume(conn());
    h.setMounts(["/dev/loop7 /mnt/x ext4 rw 0 0"]);
    await expect(c.disconnectVolume(conn())).rejects.toThrow(/mounted on \/mnt\/x/);
    h.calls.length = 0;
    await c.disconnectVolume(conn(), { force: true });
    expect(h.calls.filter((a) => a[1] === "-d")).toEqual([["losetup", "-d", "/dev/loop7"]]);
    h.loops.push({ name: "/dev/loop2", file, ro: false });
    expect(await c.getVolumePaths(conn())).toEqual([{ volumeId: "vol3", path: "/dev/loop2", protocol: "local", via: "loop" }]);
  });

  test("extendVolume: the loop is live; losetup -c, then blockdev --getsize64 (live, even mounted)", async () => {
    const c = new LocalConnector(h.options_());
    await c.connectVolume(conn());
    h.setMounts(["/dev/loop7 /mnt/x ext4 rw 0 0"]);
    h.calls.length = 0;
    expect(await c.extendVolume(conn())).toBe(32 * 1024 * 1024);
    expect(h.calls).toEqual([
      ["losetup", "--json", "--list"],
      ["losetup", "-c", "/dev/loop7"],
      ["blockdev", "--getsize64", "/dev/loop7"],
    ]);
  });

  test("bad input: relative exportName, odd volume ids", async () => {
    const c = new LocalConnector(h.options_());
    await expect(c.connectVolume(conn({ exportName: "vol.img" }))).rejects.toThrow(/exportName/);
    await expect(c.connectVolume(conn({ volumeId: "../x" }))).rejects.toThrow(/volume id/);
  });
});

describe("after a target crash: checkVolume, fenceVolume, repair under the same device, the kernel's replacement_timeout", () => {
  const mnt = (slot = "") => path.join(h.stateDir, `nbd/mnt/vol2-rw${slot}`);

  test("kernel iSCSI: replacement_timeout before login (option replacementTimeoutS), whole seconds only", async () => {
    h.touch("dev/disk/by-path/ip-10.0.0.5:3260-iscsi-iqn.2024-01.io.sds:vol1-lun-1");
    await new IscsiConnector(h.options_({ mode: "kernel", replacementTimeoutS: 30 })).connectVolume(iscsiConn({ authMethod: undefined }));
    expect(h.calls[1]).toEqual(["iscsiadm", "-m", "node", "-T", "iqn.2024-01.io.sds:vol1", "-p", "10.0.0.5:3260", "--op", "update", "-n", "node.session.timeo.replacement_timeout", "-v", "30"]);
    expect(() => new IscsiConnector(h.options_({ mode: "kernel", replacementTimeoutS: 0 }))).toThrow(/replacementTimeoutS/);
  });

  test("checkVolume (NBD): not connected; healthy = nbdinfo handshake, then one O_DIRECT read of the FUSE file, both bounded", async () => {
    const c = new NbdConnector(h.options_());
    expect(await c.checkVolume(nbdConn())).toEqual({ path: null, healthy: false, reason: "not connected" });
    await c.connectVolume(nbdConn());
    h.calls.length = 0;
    h.options.length = 0;
    expect(await c.checkVolume(nbdConn())).toEqual({ path: "/dev/loop7", healthy: true });
    expect(h.calls).toEqual([
      ["losetup", "--json", "--list"],
      ["nbdinfo", "--size", "nbd://127.0.0.1:10809/vol2"],
      ["dd", `if=${mnt()}/disk`, "of=/dev/null", "bs=4096", "count=1", "iflag=direct"],
    ]);
    expect(h.options.slice(1).map((o) => o?.timeoutMs)).toEqual([5000, 5000]);
    h.failures.set("nbdinfo", "exit 1");
    h.calls.length = 0;
    const health = await c.checkVolume(nbdConn());
    expect(health).toMatchObject({ path: "/dev/loop7", healthy: false, reason: expect.stringMatching(/^NBD server at 127.0.0.1:10809 \(export "vol2"\) does not answer: /) });
    expect(h.calls.map((a) => a[0])).toEqual(["losetup", "nbdinfo"]); // no read through a chain whose server is gone
  });

  test("checkVolume (iSCSI userspace): a login of its own, CHAP only in the environment; a dead helper is named", async () => {
    h.on["qemu-nbd"] = (args) => {
      fs.writeFileSync(args[args.indexOf("--pid-file") + 1], "777\n");
      h.live.set(777, "qemu-nbd");
    };
    const c = new IscsiConnector(h.options_({ initiator: "iqn.2024-01.io.sds:h1" }));
    await c.connectVolume(iscsiConn());
    h.calls.length = 0;
    h.options.length = 0;
    expect(await c.checkVolume(iscsiConn())).toEqual({ path: "/dev/loop7", healthy: true });
    expect(h.calls[1]).toEqual(["iscsi-readcapacity16", "-s", "-i", "iqn.2024-01.io.sds:h1", "iscsi://10.0.0.5:3260/iqn.2024-01.io.sds:vol1/1"]);
    expect(h.options[1]).toMatchObject({ timeoutMs: 5000, env: { LIBISCSI_CHAP_USERNAME: "u1", LIBISCSI_CHAP_PASSWORD: PASSWORD }, secrets: [PASSWORD] });
    expect(h.calls.flat().join(" ")).not.toContain(PASSWORD);
    h.live.delete(777);
    expect(await c.checkVolume(iscsiConn())).toEqual({ path: "/dev/loop7", healthy: false, reason: "qemu-nbd (pid 777) exited" });
  });

  test("fenceVolume: a healthy chain is left alone; a broken one loses its helpers, keeps device and record", async () => {
    const c = new NbdConnector(h.options_());
    await c.connectVolume(nbdConn());
    const killed: number[] = [];
    const kill = h.processes.kill;
    h.processes.kill = (pid, sig) => {
      killed.push(pid);
      kill(pid, sig);
    };
    expect(await c.fenceVolume(nbdConn())).toEqual({ path: "/dev/loop7", healthy: true });
    expect(killed).toEqual([]);
    h.failures.set("dd", "exit 1");
    expect((await c.fenceVolume(nbdConn())).healthy).toBe(false);
    expect(killed).toEqual([4000]);
    expect(new RecordStore(h.stateDir).read("vol2", "rw")).toMatchObject({ device: "/dev/loop7", nbdfusePid: 4000 });
  });

  test("connectVolume of a broken chain: new nbdfuse in slot .1, the loop device moves to it at the same path, the dead mount goes lazily", async () => {
    const c = new NbdConnector(h.options_());
    await c.connectVolume(nbdConn());
    h.on.umount = (args) => h.unmount(args.at(-1) as string);
    h.live.delete(4000); // nbdfuse died
    h.calls.length = 0;
    expect(await c.connectVolume(nbdConn())).toEqual({ path: "/dev/loop7" });
    expect(h.spawned[1]).toEqual(["nbdfuse", "-P", attempt(path.join(h.stateDir, "nbd/run/vol2-rw.1"), ".nbdfuse.pid"), `${mnt(".1")}/disk`, "nbd://127.0.0.1:10809/vol2"]);
    expect(h.calls).toEqual([
      ["losetup", "--json", "--list"],
      ["losetup", "-d", "/dev/loop7"],
      ["losetup", "--direct-io=on", "/dev/loop7", `${mnt(".1")}/disk`],
      ["umount", "-l", mnt()],
    ]);
    expect(new RecordStore(h.stateDir).read("vol2", "rw")).toMatchObject({ device: "/dev/loop7", mountDir: mnt(".1"), nbdfusePid: 4001 });
    expect(new RecordStore(h.stateDir).read("vol2", "rw")?.extraLayers).toBeUndefined();
  });

  test("connectVolume of a broken chain whose device is still held: the volume gets a new device, recorded and returned", async () => {
    const c = new NbdConnector(h.options_());
    await c.connectVolume(nbdConn());
    h.on.umount = (args) => h.unmount(args.at(-1) as string);
    h.live.delete(4000);
    h.failures.set("losetup --direct-io=on /dev/loop7", "losetup: /dev/loop7: failed to set up loop device: Device or resource busy");
    expect(await c.connectVolume(nbdConn())).toEqual({ path: "/dev/loop8" });
    expect(await c.getVolumePaths(nbdConn())).toEqual([{ volumeId: "vol2", path: "/dev/loop8", protocol: "nbd", via: "userspace" }]);
  });

  test("disconnect of a broken chain: helpers killed first, then losetup -d, then a lazy umount; one call", async () => {
    h.on["qemu-nbd"] = (args) => {
      fs.writeFileSync(args[args.indexOf("--pid-file") + 1], "777\n");
      h.live.set(777, "qemu-nbd");
    };
    const c = new IscsiConnector(h.options_());
    await c.connectVolume(iscsiConn());
    h.on.umount = (args) => h.unmount(args.at(-1) as string);
    h.live.delete(777); // qemu-nbd died; nbdfuse 4000 still runs
    const killed: number[] = [];
    const kill = h.processes.kill;
    h.processes.kill = (pid, sig) => {
      killed.push(pid);
      kill(pid, sig);
    };
    h.calls.length = 0;
    await c.disconnectVolume(iscsiConn());
    expect(killed).toEqual([4000]);
    expect(h.calls.filter((a) => a[1] !== "--json").map((a) => a.join(" "))).toEqual(["losetup -d /dev/loop7", `umount -l ${path.join(h.stateDir, "iscsi/mnt/vol1-rw")}`]);
    expect(new RecordStore(h.stateDir).list()).toEqual([]);
  });
});
