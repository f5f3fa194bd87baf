#!/usr/bin/env bash
# The main job: set up what is missing, then `pulumi up` the quickstart example on the embedded
# default controller (built-in local backend) and print its outputs. Safe to run again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
sds_setup
cd "$(sds_root)/examples/quickstart"
sds_pulumi_env "$PWD/.sds/pulumi"
stack="${SDS_QUICKSTART_STACK:-dev}"
pulumi stack select "$stack" --create --non-interactive >/dev/null
pulumi up --yes --non-interactive --color never
pulumi stack output --json
