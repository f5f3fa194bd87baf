/**
 * How sds names a property in check failures, error `field`s and messages: the Pulumi way,
 * `backends[0].pools[1].name`, `connector.initiator`, `call.args[1]`. One renderer, so a zod
 * issue reads the same whether the provider config, a resource input, the backends file or an
 * agent request was at fault. Imports nothing of ours.
 */

/**
 * Renders a zod issue path (`["pools", 1, "name"]`) under `root` (`"backends[0]"`): numbers are
 * indexes (`[1]`), anything else a key (`.name`, or `name` at the very start).
 * `propertyPath(["connection", "portals", 0])` → `connection.portals[0]`; `propertyPath([])` → `""`.
 */
export function propertyPath(path: readonly PropertyKey[], root = ""): string {
  let out = root;
  for (const k of path) out += typeof k === "number" ? `[${k}]` : out ? `.${String(k)}` : String(k);
  return out;
}
