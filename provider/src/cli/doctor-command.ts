/**
 * `sds doctor`: the findings of controller/doctor.ts, each with its fix; exit 1 when any fails.
 * It changes nothing (no state write, no daemon started or stopped).
 */
import type { Log } from "../compose/composition";
import { diagnose, type Finding } from "../controller/doctor";
import { checkSqliteState } from "../store/sqlite-store";
import { probeAgent, type StackFlags, stderrLog, withStack } from "./open-stack";
import { json } from "./output";
import { checkPostgresState } from "./state-location";

export function doctor(flags: StackFlags & { json?: boolean }): Promise<number> {
  const backendWarnings: string[] = [];
  const log: Log = (severity, m) => {
    if (severity === "warning" && /^sds: backend /.test(m)) backendWarnings.push(m.replace(/^sds: /, ""));
    else stderrLog(severity, m);
  };
  return withStack(
    flags,
    async (s) => {
      const st = s.parts.state;
      const state = st.kind === "postgres" ? await checkPostgresState(st.url) : checkSqliteState(st.file);
      const findings = await diagnose({
        store: s.parts.store,
        controller: await s.parts.controller(),
        state,
        backendWarnings,
        runDir: s.parts.runDir(),
        targets: s.parts.targets(),
        rbdTargets: s.parts.rbdTargets(),
        hosts: Object.keys(s.config.hosts),
        probe: (host) => probeAgent(s.parts, host),
      });
      const failed = findings.filter((f) => f.severity === "fail").length;
      const warned = findings.filter((f) => f.severity === "warn").length;
      if (flags.json) process.stdout.write(json(findings));
      else printFindings(findings, failed, warned);
      return failed > 0 ? 1 : 0;
    },
    { log },
  );
}

function printFindings(findings: Finding[], failed: number, warned: number): void {
  const mark = { ok: "ok  ", warn: "WARN", fail: "FAIL" } as const;
  for (const f of findings) {
    process.stdout.write(`${mark[f.severity]}  ${f.check.padEnd(11)}  ${f.message}\n`);
    if (f.fix) process.stdout.write(`      ${"".padEnd(11)}  fix: ${f.fix}\n`);
  }
  process.stdout.write(`sds doctor: ${failed} problem(s), ${warned} warning(s)\n`);
}
