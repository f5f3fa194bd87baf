/**
 * How the operator commands print: aligned tables for people, `--json` for scripts. A command
 * builds its rows once, as plain objects with stable field names (documented in its `--help`);
 * the table shows the columns a person needs, the JSON every field.
 */

/** One column of a table: its heading and how a row shows in it. */
export interface Column<R> {
  header: string;
  value: (row: R) => string | number | boolean | null | undefined;
  /** Numbers read best right-aligned. */
  right?: boolean;
}

/** Why: `column -t` would break on empty cells and spaces in names; this keeps both. */
export function table<R>(rows: readonly R[], columns: readonly Column<R>[]): string {
  const cells = rows.map((r) => columns.map((c) => show(c.value(r))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i].length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => (columns[i].right ? v.padStart(widths[i]) : i === values.length - 1 ? v : v.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join("\n") + "\n";
}

function show(v: string | number | boolean | null | undefined): string {
  if (v === null || v === undefined || v === "") return "-";
  if (typeof v === "boolean") return v ? "yes" : "no";
  return String(v);
}

/** The rows as JSON, one document, stable key order as built. */
export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Print `rows` as a table, or as JSON with `--json`; a note for people when there are none. */
export function printRows<R>(rows: readonly R[], columns: readonly Column<R>[], o: { json?: boolean; empty: string; out?: (s: string) => void }): void {
  const out = o.out ?? ((s: string) => process.stdout.write(s));
  if (o.json) out(json(rows));
  else if (rows.length === 0) out(`${o.empty}\n`);
  else out(table(rows, columns));
}

/** GiB with at most one decimal: capacities are whole GiB in configs, fractional when measured. */
export function gib(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

/** Bytes for people (KiB … TiB). */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** Seconds for people: 42s, 5m, 3h, 2d. */
export function age(seconds: number | undefined): string {
  if (seconds === undefined) return "never";
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}
