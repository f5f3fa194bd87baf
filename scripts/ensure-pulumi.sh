#!/usr/bin/env bash
# ensure-pulumi.sh — make sure a Pulumi CLI, a Node.js language host of the pinned version and the Pulumi YAML
# language host exist, and print the folder holding them (`pulumi`, `pulumi-language-nodejs`,
# `pulumi-language-yaml`) as the LAST line of stdout. Progress goes to stderr.
#
#   PATH="$(bash scripts/ensure-pulumi.sh | tail -n1):$PATH"
#
# Order of preference:
#   1. `pulumi` and `pulumi-language-nodejs` already on PATH, in one folder, both reporting the pinned version,
#      with a `pulumi-language-yaml` beside them;
#   2. the cache folder ${SDS_CACHE_DIR:-$HOME/.cache/sds}/pulumi/v<version>/ when its stamps match the sources;
#   3. otherwise build what is missing or stale into a temp folder and move it into place, under a flock so
#      concurrent callers build only once: the CLI and the Node.js host from tools/pulumi-cli, the YAML host from
#      tools/pulumi-yaml (Go module proxy; see tools/pulumi-cli/README.md). Each binary has its own stamp, so a
#      new YAML host does not rebuild the CLI.
#
# Env: SDS_CACHE_DIR (cache root), SDS_PULUMI_IGNORE_PATH=1 (skip step 1), SDS_PULUMI_REBUILD=1 (force step 3).
set -euo pipefail

log() { printf 'ensure-pulumi: %s\n' "$*" >&2; }
die() { printf 'ensure-pulumi: error: %s\n' "$*" >&2; exit 1; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WRAPPER="$REPO_ROOT/tools/pulumi-cli"
YAML_MOD="$REPO_ROOT/tools/pulumi-yaml"   # its own module: pulumi-yaml's requirements stay out of the CLI's stamp
for f in "$WRAPPER/go.mod" "$WRAPPER/go.sum" "$YAML_MOD/go.mod" "$YAML_MOD/go.sum"; do [[ -f "$f" ]] || die "missing $f"; done

# --- which version? --------------------------------------------------------------------------------------
# The wrapper module pins exactly one pkg/v3 version; the npm SDK must be that same version.
WRAPPER_VERSION="$(awk '$1 == "github.com/pulumi/pulumi/pkg/v3" { sub(/^v/, "", $2); print $2; exit }' "$WRAPPER/go.mod")"
[[ -n "$WRAPPER_VERSION" ]] || die "could not read the github.com/pulumi/pulumi/pkg/v3 version from $WRAPPER/go.mod"

json_field() { # json_field FILE EXPR — print a field of a JSON file with node (always present for this project)
  node -e "const o = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')); const v = ($2);
            process.stdout.write(v == null ? '' : String(v))" "$1"
}
if [[ -f "$REPO_ROOT/node_modules/@pulumi/pulumi/package.json" ]]; then
  SDK_VERSION="$(json_field "$REPO_ROOT/node_modules/@pulumi/pulumi/package.json" 'o.version')"
  SDK_SOURCE="node_modules/@pulumi/pulumi/package.json"
elif [[ -f "$REPO_ROOT/package.json" ]]; then
  SDK_VERSION="$(json_field "$REPO_ROOT/package.json" '(o.dependencies || {})["@pulumi/pulumi"] || (o.devDependencies || {})["@pulumi/pulumi"]')"
  SDK_SOURCE="package.json"
else
  die "neither node_modules/@pulumi/pulumi/package.json nor package.json found in $REPO_ROOT"
fi
SDK_VERSION="${SDK_VERSION#[=v^~]}"; SDK_VERSION="${SDK_VERSION#v}"
[[ -n "$SDK_VERSION" ]] || die "no @pulumi/pulumi dependency found in $SDK_SOURCE"
if [[ "$SDK_VERSION" != "$WRAPPER_VERSION" ]]; then
  die "@pulumi/pulumi is '$SDK_VERSION' (from $SDK_SOURCE) but tools/pulumi-cli pins pkg/v3 v$WRAPPER_VERSION;
  the CLI and the SDK must match. Pin \"@pulumi/pulumi\": \"$WRAPPER_VERSION\" in package.json, or move the wrapper
  module to the new version (see tools/pulumi-cli/README.md) — only versions served by the Go module proxy work."
fi
VERSION="v$WRAPPER_VERSION"
BINS=(pulumi pulumi-language-nodejs pulumi-language-yaml)
# pulumi-yaml has its own versions; only v1.38.0 is known to build against pkg/v3 v3.259.0 (tools/pulumi-cli/README.md).
YAML_VERSION="$(awk '$1 == "github.com/pulumi/pulumi-yaml" { print $2; exit }' "$YAML_MOD/go.mod")"
[[ -n "$YAML_VERSION" ]] || die "could not read the github.com/pulumi/pulumi-yaml version from $YAML_MOD/go.mod"
YAML_PKG_VERSION="$(awk '$1 == "github.com/pulumi/pulumi/pkg/v3" { sub(/^v/, "", $2); print $2; exit }' "$YAML_MOD/go.mod")"
[[ "$YAML_PKG_VERSION" == "$WRAPPER_VERSION" ]] || die "tools/pulumi-yaml/go.mod builds against pkg/v3 v$YAML_PKG_VERSION but
  tools/pulumi-cli pins v$WRAPPER_VERSION; the YAML host must speak the engine's protocol: move both together"

# --- 1. already on PATH? -------------------------------------------------------------------------------------
bin_version() { # bin_version PATH — the version a binary reports, or nothing (never blocks: no TTY, timeout)
  local out
  if [[ "$(basename "$1")" == pulumi ]]; then
    out="$(PULUMI_SKIP_UPDATE_CHECK=true timeout 30 "$1" version </dev/null 2>/dev/null || true)"
  else # our host supports --version; an upstream one may not (it would start serving: hence the timeout)
    out="$(timeout 5 "$1" --version </dev/null 2>/dev/null || true)"
  fi
  printf '%s' "$out" | head -n1 | tr -d '[:space:]'
}
if [[ "${SDS_PULUMI_IGNORE_PATH:-}" != 1 && "${SDS_PULUMI_REBUILD:-}" != 1 ]]; then
  if p1="$(command -v pulumi 2>/dev/null)" && p2="$(command -v pulumi-language-nodejs 2>/dev/null)"; then
    d1="$(cd "$(dirname "$p1")" && pwd -P)"; d2="$(cd "$(dirname "$p2")" && pwd -P)"
    # The YAML host has no --version flag: beside a matching CLI, it is taken as it is.
    if [[ "$d1" == "$d2" && -x "$d1/pulumi-language-yaml" && "$(bin_version "$p1")" == "$VERSION" && "$(bin_version "$p2")" == "$VERSION" ]]; then
      log "using $VERSION found on PATH in $d1"
      printf '%s\n' "$d1"
      exit 0
    fi
  fi
fi

# --- 2. cached? ----------------------------------------------------------------------------------------------
CACHE_ROOT="${SDS_CACHE_DIR:-${HOME:?set HOME or SDS_CACHE_DIR}/.cache/sds}/pulumi"
DEST="$CACHE_ROOT/$VERSION"
LDFLAGS="-w -s -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$VERSION"
YAML_LDFLAGS="-w -s -X github.com/pulumi/pulumi-yaml/pkg/version.Version=$YAML_VERSION"
TAGS="osusergo,grpcnotrace"
# Stamps: what each binary was built from. The CLI depends on the module files and the build recipe; the host
# also on its own source, so editing the host rebuilds only the host.
CLI_STAMP="$( { echo "recipe: CGO_ENABLED=0 -trimpath -tags $TAGS -ldflags $LDFLAGS"; cat "$WRAPPER/go.mod" "$WRAPPER/go.sum"; } | sha256sum | cut -d' ' -f1)"
HOST_STAMP="$( { echo "$CLI_STAMP"; find "$WRAPPER/cmd/pulumi-language-nodejs" -type f -name '*.go' -print0 | LC_ALL=C sort -z | xargs -0 cat; } | sha256sum | cut -d' ' -f1)"
YAML_STAMP="$( { echo "recipe: CGO_ENABLED=0 -trimpath -tags $TAGS -ldflags $YAML_LDFLAGS"; cat "$YAML_MOD/go.mod" "$YAML_MOD/go.sum"; } | sha256sum | cut -d' ' -f1)"
want_stamp() {
  case "$1" in pulumi) echo "$CLI_STAMP" ;; pulumi-language-nodejs) echo "$HOST_STAMP" ;; *) echo "$YAML_STAMP" ;; esac
}
is_fresh() { # is_fresh DIR BIN
  [[ -x "$1/$2" && -f "$1/.stamp-$2" && "$(cat "$1/.stamp-$2")" == "$(want_stamp "$2")" ]]
}
all_fresh() { local b; for b in "${BINS[@]}"; do is_fresh "$1" "$b" || return 1; done; }

if [[ "${SDS_PULUMI_REBUILD:-}" != 1 ]] && all_fresh "$DEST"; then
  log "using cached $VERSION in $DEST"
  printf '%s\n' "$DEST"
  exit 0
fi

# --- 3. build (under a lock) ---------------------------------------------------------------------------------
command -v go >/dev/null 2>&1 || die "go is not on PATH; Go >= 1.25.11 is needed to build the Pulumi CLI (go.mod's go line)"
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.$VERSION.lock"
if ! flock -n 9; then
  log "another process is building $VERSION; waiting for its lock ($CACHE_ROOT/.$VERSION.lock)"
  flock 9
fi
# Someone else may have finished the build while we waited.
if [[ "${SDS_PULUMI_REBUILD:-}" != 1 ]] && all_fresh "$DEST"; then
  log "using cached $VERSION in $DEST (built by another process)"
  printf '%s\n' "$DEST"
  exit 0
fi

TMP="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")"   # same filesystem as DEST, so the final mv is a rename
trap 'rm -rf "$TMP" "$CACHE_ROOT/.old.$$"' EXIT
gobuild() { # gobuild OUT PACKAGE [NOTE] [MODULE_DIR] [LDFLAGS] [VERSION]
  local start=$SECONDS
  log "building $(basename "$1") ${6:-$VERSION} (go build $2)${3:+ — $3}"
  ( cd "${4:-$WRAPPER}" && GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local \
      go build -trimpath -tags "$TAGS" -ldflags "${5:-$LDFLAGS}" -o "$1" "$2" ) >&2 \
    || die "go build $2 failed (see above). The Go module proxy must be reachable for the first build."
  log "built $(basename "$1") in $((SECONDS - start))s"
}
for b in "${BINS[@]}"; do
  if [[ "${SDS_PULUMI_REBUILD:-}" != 1 ]] && is_fresh "$DEST" "$b"; then
    # Still valid: reuse it (hard link when possible, so no copy of the ~100 MB CLI).
    ln "$DEST/$b" "$TMP/$b" 2>/dev/null || cp -p "$DEST/$b" "$TMP/$b"
  elif [[ "$b" == pulumi ]]; then
    gobuild "$TMP/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi "about 6 minutes on 2 cores with an empty Go build cache"
  elif [[ "$b" == pulumi-language-nodejs ]]; then
    gobuild "$TMP/pulumi-language-nodejs" ./cmd/pulumi-language-nodejs
  else
    gobuild "$TMP/pulumi-language-yaml" github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml \
      "about 2 minutes on 2 cores after the CLI (it shares most packages)" "$YAML_MOD" "$YAML_LDFLAGS" "$YAML_VERSION"
  fi
  want_stamp "$b" >"$TMP/.stamp-$b"
done
for b in pulumi pulumi-language-nodejs; do # the YAML host has no --version
  [[ "$(bin_version "$TMP/$b")" == "$VERSION" ]] || die "$TMP/$b does not report $VERSION"
done
chmod 755 "$TMP"

# Swap into place: move the old folder aside, rename the new one in, then delete the old one. Readers that do not
# hold the lock may miss the folder for an instant; they then take the lock and find the new one.
[[ -e "$DEST" ]] && mv "$DEST" "$CACHE_ROOT/.old.$$"
mv "$TMP" "$DEST"
log "installed $VERSION into $DEST"
printf '%s\n' "$DEST"
