#!/usr/bin/env bash
# The tests: set up what is missing, check the dependency rule and the lint, then every jest
# project (unit, contract, provider, e2e, datapath).
# Extra arguments go to jest (e.g. `npm test -- --selectProjects unit`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
sds_setup
cd "$(sds_root)"
# The dependency rule first (a few seconds): imports point down and nothing is circular
# (.dependency-cruiser.cjs says which layer may import which, and why). A violation fails the
# command before jest starts, with the violations above one summary line.
deps_status=0
deps_out="$(npm run --silent lint:deps 2>&1)" || deps_status=$?
printf '%s\n' "$deps_out"
if [ "$deps_status" != 0 ]; then
  echo "lint:deps: FAILED, $(grep -oE '[0-9]+ errors?' <<<"$deps_out" | head -n1 || echo "depcruise exit $deps_status"): an import breaks the layering or makes a cycle (rules in .dependency-cruiser.cjs); jest not run"
  exit 1
fi
echo "lint:deps: ok (layering and cycles, .dependency-cruiser.cjs)"
# ESLint (eslint.config.mjs): type-aware, so a forgotten await fails here, not in production.
lint_status=0
lint_out="$(npm run --silent lint 2>&1)" || lint_status=$?
if [ "$lint_status" != 0 ]; then
  printf '%s
' "$lint_out"
  echo "lint: FAILED ($(grep -oE '[0-9]+ problems?' <<<"$lint_out" | head -n1 || echo "eslint exit $lint_status")); jest not run"
  exit 1
fi
echo "lint: ok (eslint.config.mjs)"
mkdir -p test/.work
results=test/.work/jest-results.json
rm -f "$results"
status=0
npx jest --ci --maxWorkers=2 --json --outputFile="$results" "$@" || status=$?
# One plain closing line, whatever reads the log: "jest: N passed, N failed, N skipped".
if [ -f "$results" ]; then
  node -e 'const r = require(process.argv[1]);
    console.log(`jest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);' "$(pwd)/$results"
fi
exit "$status"
