#!/usr/bin/env bash
# Installs the tools that the chart and alert tests use, built from their Go module sources through
# the Go module proxy (nothing prebuilt is downloaded):
#   helm     – renders the chart in test/unit/chart.test.ts and test/unit/alerts.test.ts
#   promtool – runs the alert rule unit tests (charts/oauth-token-operator/tests/alerts-test.yaml)
# Idempotent: each binary is cached per version under ~/.cache/oauth-token-operator/tools/<tool>-<version>/
# and linked into ~/.cache/oauth-token-operator/tools/bin/; a second run only re-links. The tests
# look there by themselves (or on PATH, or at $OTO_HELM / $OTO_PROMTOOL).
#
# Usage: charts/oauth-token-operator/tests/install-tools.sh [helm] [promtool]   (default: both)
# First build on 2 cores: helm about 4 min, promtool about 6–14 min (Go build cache cold).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
# Kubernetes version helm's template/lint assume when no cluster is asked (its release builds set
# it from the client-go version they are built with: 1.36 for v3.21).
HELM_KUBE_MINOR="${HELM_KUBE_MINOR:-36}"
# Prometheus tags its Go module v0.<major><minor>.<patch>: v0.315.0 is Prometheus 3.15.0.
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.315.0}"

CACHE="${OTO_TOOLS_CACHE:-$HOME/.cache/oauth-token-operator/tools}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

command -v go >/dev/null || {
  echo "install-tools: go is required (apt-get install golang-go; GOTOOLCHAIN=auto fetches a newer one)" >&2
  exit 1
}
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export CGO_ENABLED=0

# build NAME VERSION COMMAND...: runs COMMAND with $OUT set to the directory to put NAME in.
build() {
  local name=$1 version=$2
  shift 2
  local dir="$CACHE/$name-$version"
  if [ -x "$dir/$name" ]; then
    echo "install-tools: $name $version already in $dir" >&2
  else
    echo "install-tools: building $name $version (a few minutes the first time)" >&2
    local start=$SECONDS
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    OUT="$dir.tmp" "$@"
    "$dir.tmp/$name" --help >/dev/null
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    echo "install-tools: built $name in $((SECONDS - start)) s" >&2
  fi
  ln -sfn "$dir/$name" "$BIN/$name"
}

build_helm() {
  GOBIN="$OUT" go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_MINOR \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_KUBE_MINOR" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# `go install …/promtool@version` refuses Prometheus: its go.mod has replace directives. So the
# module is fetched from the proxy and built inside it, as its own main module (its go.sum pins
# every dependency). remove_all_sd leaves out the cloud service-discovery plugins that rule tests
# do not use, which halves the build.
build_promtool() {
  local dir src
  dir=$(cd "${TMPDIR:-/tmp}" && go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || {
    echo "install-tools: go mod download of prometheus $PROMETHEUS_MODULE_VERSION failed" >&2
    return 1
  }
  src="$OUT/src"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  (cd "$src" && GOWORK=off go build -tags remove_all_sd -trimpath -ldflags "-s -w \
    -X github.com/prometheus/common/version.Version=$PROMETHEUS_MODULE_VERSION" \
    -o "$OUT/promtool" ./cmd/promtool)
  rm -rf "$src"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(helm promtool)
for tool in "${tools[@]}"; do
  case "$tool" in
    helm) build helm "$HELM_VERSION" build_helm ;;
    promtool) build promtool "$PROMETHEUS_MODULE_VERSION" build_promtool ;;
    *)
      echo "install-tools: unknown tool $tool (helm, promtool)" >&2
      exit 2
      ;;
  esac
done
echo "$BIN"
