/** Plugin command-line arguments as the engine passes them. */

/** The engine address is the first argument that is not a flag (`-v=9`, `--logtostderr`, `--tracing X`). */
export function engineAddress(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--tracing" || a === "-tracing") {
      i++;
      continue;
    }
    if (a.startsWith("-")) continue;
    return a;
  }
  return undefined;
}
