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
# gen-sdk leaves no "main": consumers (the examples, through the npm workspace; a user, from the
# `npm pack` tarball) load the compiled bin/. The tarball holds only bin/'s JavaScript and declarations
# (no sources, no maps pointing at them), bin/package.json (utilities.ts reads its version from there:
# build:sdk copies it), package.json, README.md and the LICENSE.
node -e '
  const fs = require("fs"); const f = process.argv[1];
  const p = JSON.parse(fs.readFileSync(f, "utf8"));
  p.main = "bin/index.js"; p.types = "bin/index.d.ts";
  p.files = ["bin/**/*.js", "bin/**/*.d.ts", "bin/package.json"];
  fs.writeFileSync(f, JSON.stringify(p, null, 4) + "\n");
' "$out/nodejs/package.json"
cp "$root/LICENSE" "$out/nodejs/LICENSE"
# gen-sdk recreates the folder (dropping bin/): rebuild the repo's own SDK so the examples keep working.
if [ "$out" = "$root/sdk" ]; then (cd "$root" && npm run --silent build:sdk >&2); fi
