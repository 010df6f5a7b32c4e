#!/usr/bin/env bash
# Installs the tools that the chart and alert tests use, built from their Go module sources through
# the Go module proxy (no prebuilt downloads are needed):
#   helm     – renders the chart in test/unit/chart.test.ts
#   promtool – runs the alert rule unit tests in test/unit/alerts.test.ts
# Idempotent: binaries are cached per version under ~/.cache/oauth-token-operator/tools/<tool>-<version>/
# and a second run does nothing. Prints the directory to put on PATH (or set OTO_TOOLS_DIR to).
#
# Usage: charts/oauth-token-operator/tests/install-tools.sh [helm] [promtool]   (default: both)
# Then:  export PATH="$HOME/.cache/oauth-token-operator/tools/bin:$PATH"
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
# Prometheus tags its Go module v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"

CACHE="${OTO_TOOLS_CACHE:-$HOME/.cache/oauth-token-operator/tools}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

command -v go >/dev/null || {
  echo "install-tools: go is required (apt-get install golang-go; GOTOOLCHAIN=auto fetches a newer one)" >&2
  exit 1
}
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# install NAME VERSION PACKAGE [LDFLAGS]
install() {
  local name=$1 version=$2 package=$3 ldflags=${4:-}
  local dir="$CACHE/$name-$version"
  if [ -x "$dir/$name" ]; then
    echo "install-tools: $name $version already in $dir" >&2
  else
    echo "install-tools: building $name $version from $package (a few minutes the first time)" >&2
    local start=$SECONDS
    mkdir -p "$dir.tmp"
    CGO_ENABLED=0 GOBIN="$dir.tmp" go install -trimpath -ldflags "-s -w $ldflags" "$package@$version"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    echo "install-tools: built $name in $((SECONDS - start)) s" >&2
  fi
  ln -sfn "$dir/$name" "$BIN/$name"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(helm promtool)
for tool in "${tools[@]}"; do
  case "$tool" in
    helm)
      install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
        "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
      ;;
    promtool)
      install promtool "$PROMETHEUS_MODULE_VERSION" github.com/prometheus/prometheus/cmd/promtool
      ;;
    *)
      echo "install-tools: unknown tool $tool (helm, promtool)" >&2
      exit 2
      ;;
  esac
done
echo "$BIN"
