#!/usr/bin/env bash
# Generate the three SDKs from schema.json into $1 (default sdk/): nodejs/ with the real
# `pulumi package gen-sdk`, then the package pointed at its compiled output; python/ and go/ with
# tools/sdkgen, which calls the generators of pkg/v3 directly (gen-sdk would need the Python and Go
# language hosts, which cannot be built here: tools/sdkgen/main.go says why), then `go mod tidy`
# writes the Go module's go.sum. Used by the staleness test (test/e2e/sdk-fresh.test.ts).
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
# Python and Go. tools/sdkgen must pin the pkg/v3 the CLI pins: the SDKs then come from the same generators
# as the Node.js one, and the Go SDK requires the sdk/v3 the engine was built from.
pin() { awk '$1 == "github.com/pulumi/pulumi/pkg/v3" { print $2; exit }' "$1"; }
cli_pin="$(pin "$root/tools/pulumi-cli/go.mod")"; gen_pin="$(pin "$root/tools/sdkgen/go.mod")"
if [ "$cli_pin" != "$gen_pin" ]; then
  echo "gen-sdk: tools/sdkgen/go.mod pins pkg/v3 $gen_pin but tools/pulumi-cli/go.mod pins $cli_pin; move both together" >&2
  exit 1
fi
(cd "$root/tools/sdkgen" && GOFLAGS=-mod=readonly CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -o "$tmp/sds-sdkgen" .) >&2
for lang in python go; do "$tmp/sds-sdkgen" --schema "$root/schema.json" --language "$lang" --out "$out"; done
(cd "$out/go" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod tidy) >&2
