/**
 * The error taxonomy (errors.ts) as exec/run.ts fills it from real commands, the one list of
 * codes, and the one zod-path renderer (domain/property-path.ts).
 */
import { z } from "zod";
import { propertyPath } from "../../provider/src/domain/property-path";
import {
  AgentUnavailableError,
  BackendError,
  BACKEND_ERROR_CODES,
  CommandFailedError,
  CommandTimeoutError,
  DeviceBusyError,
  ERROR_CODES,
  isBackendErrorCode,
  isUserErrorCode,
  LockTimeoutError,
  UserError,
  USER_ERROR_CODES,
} from "../../provider/src/errors";
import { run } from "../../provider/src/exec/run";

const SECRET = "S3cret-Chap-Pass";

describe("exec/run: failures carry argv, exit code and stderr as fields", () => {
  test("a failing command: CommandFailedError with argv and stderr masked, exitCode; the message as before", async () => {
    const err = await run("sh", ["-c", `echo "bad password ${SECRET}" >&2; exit 3`, SECRET], { secrets: [SECRET] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandFailedError);
    expect(err).toBeInstanceOf(BackendError);
    const e = err as CommandFailedError;
    expect(e).toMatchObject({ code: "COMMAND_FAILED", retryable: false, exitCode: 3, signal: undefined, stderr: "bad password ***" });
    expect(e.argv).toEqual(["sh", "-c", 'echo "bad password ***" >&2; exit 3', "***"]);
    expect(e.message).toBe(`command failed (exit 3): sh -c echo "bad password ***" >&2; exit 3 ***: bad password ***`);
    expect(JSON.stringify({ ...e, message: e.message })).not.toContain(SECRET);
  });

  test("a command killed by a signal: no exit code, the signal", async () => {
    const err = (await run("sh", ["-c", "kill -KILL $$"]).catch((e: unknown) => e)) as CommandFailedError;
    expect(err).toBeInstanceOf(CommandFailedError);
    expect(err).toMatchObject({ exitCode: undefined, signal: "SIGKILL" });
    expect(err.message).toMatch(/^command failed \(killed\): sh -c/);
  });

  test("a command that cannot start: CommandFailedError whose cause is the spawn error", async () => {
    const err = (await run("/nonexistent/sds-no-such-command", [SECRET], { secrets: [SECRET] }).catch((e: unknown) => e)) as CommandFailedError;
    expect(err).toBeInstanceOf(CommandFailedError);
    expect(err.exitCode).toBeUndefined();
    expect(err.argv).toEqual(["/nonexistent/sds-no-such-command", "***"]);
    expect(err.message).toBe("command failed (failed to start): /nonexistent/sds-no-such-command ***");
    // the cause is execa's error, its text (which holds the argv) masked too
    expect(err.cause).toMatchObject({ code: "ENOENT" });
    expect((err.cause as Error).message).toContain("ENOENT");
    expect((err.cause as Error).message).not.toContain(SECRET);
  });

  test("a command past its timeout: CommandTimeoutError, retryable, with argv and timeoutMs", async () => {
    // exec: the shell becomes sleep, so the kill at the timeout ends the only process holding the
    // output pipes (a forked sleep kept them open for its 5 s, and the test ran into jest's bound).
    const err = await run("sh", ["-c", "exec sleep 5", SECRET], { timeoutMs: 100, secrets: [SECRET] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandTimeoutError);
    expect(err).toMatchObject({ code: "TIMEOUT", retryable: true, timeoutMs: 100, argv: ["sh", "-c", "exec sleep 5", "***"], message: "command timed out after 100 ms: sh -c exec sleep 5 ***" });
  });
});

describe("the other classes", () => {
  test("DeviceBusyError is INVALID_STATE (a UserError) with the device and its holder", () => {
    const e = new DeviceBusyError("/dev/loop7", "cannot disconnect: /dev/loop7 is mounted on /mnt/x", "/dev/loop7 is mounted on /mnt/x");
    expect(e).toBeInstanceOf(UserError);
    expect(e).toMatchObject({ name: "DeviceBusyError", code: "INVALID_STATE", device: "/dev/loop7", holder: "/dev/loop7 is mounted on /mnt/x" });
  });

  test("LockTimeoutError and AgentUnavailableError: retryable backend faults naming what they waited for", () => {
    expect(new LockTimeoutError("export:t1", 50, { holder: "p1:abc" })).toMatchObject({ code: "TIMEOUT", retryable: true, lock: "export:t1", holder: "p1:abc", message: "timed out after 50 ms waiting for lock export:t1 (held by p1:abc)" });
    const cause = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
    expect(new AgentUnavailableError("http://h:7700", "connect ECONNREFUSED (4 attempts)", true, { cause })).toMatchObject({
      code: "AGENT_UNAVAILABLE",
      url: "http://h:7700",
      retryable: true,
      cause,
      message: "sds-agent at http://h:7700 is unreachable: connect ECONNREFUSED (4 attempts)",
    });
  });

  test("one list of codes, split into user and backend ones", () => {
    expect(ERROR_CODES).toEqual([...USER_ERROR_CODES, ...BACKEND_ERROR_CODES]);
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    expect(ERROR_CODES.filter(isUserErrorCode)).toEqual([...USER_ERROR_CODES]);
    expect(ERROR_CODES.filter(isBackendErrorCode)).toEqual([...BACKEND_ERROR_CODES]);
    expect(isUserErrorCode("UNAUTHORIZED")).toBe(false);
  });
});

describe("propertyPath: zod issue paths the Pulumi way", () => {
  test("indexes in brackets, keys after dots, under an optional root", () => {
    expect(propertyPath(["pools", 1, "name"], "backends[0]")).toBe("backends[0].pools[1].name");
    expect(propertyPath([0, "pools", 1, "name"], "backends")).toBe("backends[0].pools[1].name");
    expect(propertyPath(["initiator"], "connector")).toBe("connector.initiator");
    expect(propertyPath(["call", "args", 1])).toBe("call.args[1]");
    expect(propertyPath([2, "x"])).toBe("[2].x");
    expect(propertyPath([])).toBe("");
    expect(propertyPath([], "sizeGib")).toBe("sizeGib");
  });

  test("on a real zod issue", () => {
    const r = z.object({ connection: z.object({ portals: z.array(z.string()) }) }).safeParse({ connection: { portals: ["a", 3] } });
    expect(r.success).toBe(false);
    expect(propertyPath(r.error!.issues[0].path)).toBe("connection.portals[1]");
  });
});
