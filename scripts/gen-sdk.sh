#!/usr/bin/env bash
# Generate the Node.js SDK from schema.json with the real `pulumi package gen-sdk`, then point
# the package at its compiled output. $1: output folder (default sdk/). Used by the staleness test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root="$(sds_root)"
out="$(realpath -m "${1:-$root/sdk}")"
dir="$(bash "$root/scripts/ensure-pulumi.sh")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sds_pulumi_env "$tmp"
"$dir/pulumi" package gen-sdk "$root/schema.json" --language nodejs --out "$out" >&2
# gen-sdk leaves no "main": consumers (the examples, through the npm workspace) load the compiled bin/.
node -e '
  const fs = require("fs"); const f = process.argv[1];
  const p = JSON.parse(fs.readFileSync(f, "utf8"));
  p.main = "bin/index.js"; p.types = "bin/index.d.ts";
  fs.writeFileSync(f, JSON.stringify(p, null, 4) + "\n");
' "$out/nodejs/package.json"
# gen-sdk recreates the folder (dropping bin/): rebuild the repo's own SDK so the examples keep working.
if [ "$out" = "$root/sdk" ]; then (cd "$root" && npm run --silent build:sdk >&2); fi
