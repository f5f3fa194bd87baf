#!/usr/bin/env bash
# The tests: set up what is missing, then every jest project (unit, contract, provider, e2e).
# Extra arguments go to jest (e.g. `npm test -- --selectProjects unit`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
sds_setup
cd "$(sds_root)"
exec npx jest --ci --maxWorkers=2 "$@"
