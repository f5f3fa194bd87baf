#!/usr/bin/env bash
# The tests: set up what is missing, then every jest project (unit, contract, provider, e2e).
# Extra arguments go to jest (e.g. `npm test -- --selectProjects unit`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
sds_setup
cd "$(sds_root)"
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
