# Shared by the project's scripts: set up what is missing, idempotently, and the Pulumi env.
# Source it; it defines functions and changes nothing by itself.

sds_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

sds_log() { printf '[sds] %s\n' "$*" >&2; }

# The data path's real parts, from Debian: tgt (iSCSI target), nbdkit (NBD server), and the
# initiator-side tools the tests use (libiscsi's iscsi-ls, qemu-io with libiscsi, nbdcopy/nbdinfo);
# and PostgreSQL's server, for the store contract suite's throwaway cluster (test/helpers/postgres.ts).
# Its initdb is not on PATH (Debian keeps it per major version), hence the full path in the list.
# And a single-node Ceph for the rbd driver's tests (test/helpers/ceph.ts: mon, mgr, one memstore
# OSD) with tgt's rbd backing store (tgt-rbd: a plugin, not a command, hence its file in the list).
SDS_DEBIAN_PACKAGES=(tgt nbdkit libnbd-bin qemu-utils qemu-block-extra libiscsi-bin postgresql ceph-mon ceph-mgr ceph-osd ceph-common tgt-rbd)
SDS_DEBIAN_COMMANDS=(tgtd tgtadm nbdkit nbdinfo qemu-io iscsi-ls /usr/lib/postgresql/15/bin/initdb ceph-mon ceph-mgr ceph-osd ceph rbd /usr/lib/tgt/backing-store/bs_rbd.so)

# Install the Debian packages when root and any command is missing (without root: say so and go on;
# the data-path tests then skip, saying why).
sds_debian_packages() {
  local missing=0 c
  for c in "${SDS_DEBIAN_COMMANDS[@]}"; do command -v "$c" >/dev/null 2>&1 || [ -f "$c" ] || missing=1; done
  [ "$missing" = 1 ] || return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    sds_log "not root (or no apt-get): cannot install ${SDS_DEBIAN_PACKAGES[*]}; data-path, PostgreSQL and Ceph tests will skip"
    return 0
  fi
  sds_log "installing Debian packages: ${SDS_DEBIAN_PACKAGES[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${SDS_DEBIAN_PACKAGES[@]}" >&2
}

# npm packages (from package-lock.json), the compiled provider and SDK, the Pulumi CLI, and (as
# root) the Debian packages of the data path.
sds_setup() {
  local root; root="$(sds_root)"
  cd "$root"
  sds_debian_packages
  # better-sqlite3 builds from source here (no prebuilt binaries can be downloaded); node-gyp
  # must use the installed Node headers instead of fetching them.
  if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ]; then export npm_config_nodedir=/usr; fi
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
     || ! node -e 'require("better-sqlite3")' >/dev/null 2>&1; then
    # Not `npm ci`: the reachable npm registry lacks some optional platform builds (e.g.
    # @unrs/resolver-binding-android-*), so the lock file cannot list them and `npm ci` refuses
    # the lock as out of sync. `npm install` follows the lock for everything it does list.
    sds_log "installing npm packages (npm install, following package-lock.json)"
    npm install --no-audit --no-fund >&2
  fi
  sds_log "building the provider and the SDK"
  npm run --silent build >&2
  SDS_PULUMI_DIR="$(bash scripts/ensure-pulumi.sh)"
  export SDS_PULUMI_DIR
  export PATH="$SDS_PULUMI_DIR:$PATH"
}

# Environment for a Pulumi CLI that never goes online. $1: folder for the file backend and PULUMI_HOME.
sds_pulumi_env() {
  local dir="$1"
  mkdir -p "$dir/backend" "$dir/home"
  export PULUMI_BACKEND_URL="file://$dir/backend"
  export PULUMI_HOME="$dir/home"
  export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-sds-local}"
  export PULUMI_SKIP_UPDATE_CHECK=true
  export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
  export PULUMI_DIY_BACKEND_NO_LEGACY_WARNING=true
  export PULUMI_DISABLE_REGISTRY_RESOLVE=true
  export PULUMI_SKIP_CONFIRMATIONS=true
}
