#!/usr/bin/env bash
# The test suite against a real cluster, for those who have Docker and kind
# (it cannot run on the development machines, which have no Docker engine).
#
#   tools/kind-e2e.sh            create (or reuse) the kind cluster, build and load the image,
#                                run PostgreSQL in it, then run the chart, RBAC and image tests
#   tools/kind-e2e.sh -- ARGS    pass ARGS to pytest instead (e.g. `-- tests/` for everything)
#   KEEP_CLUSTER=1 ...           leave the cluster running afterwards
#
# It is the same test code as `make test`: FOUNDRY_TEST_KUBECONFIG points the
# kube fixtures at the kind cluster, FOUNDRY_TEST_DATABASE_URL the postgres
# fixtures at the in-cluster PostgreSQL (through a port-forward), and the
# helm tests install the chart with the image built here. In a real cluster
# the migration hook Job runs for real, so the tests wait for it instead of
# playing the kubelet.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-foundry-e2e}"
IMAGE="${FOUNDRY_E2E_IMAGE:-foundry:e2e}"
DB_NS=foundry-e2e-db
DB_PORT="${FOUNDRY_E2E_DB_PORT:-55432}"
PYTEST_ARGS=(tests/test_helm_install.py tests/test_rbac_least_privilege.py tests/test_helm_chart.py tests/test_image.py)
if [ "${1:-}" = "--" ]; then shift; PYTEST_ARGS=("$@"); fi

say() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { printf '[kind-e2e] error: %s\n' "$*" >&2; exit 1; }
for tool in docker kind; do
  command -v "$tool" >/dev/null || die "$tool is not installed (this script needs Docker and kind)"
done
make venv binaries >/dev/null
BIN="$(bash tools/controlplane.sh)"
KUBECTL="$BIN/kubectl"

if ! kind get clusters | grep -qx "$CLUSTER"; then
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 120s
fi
KUBECONFIG_FILE="$(mktemp)"
PF_PID=""
cleanup() {
  [ -n "$PF_PID" ] && kill "$PF_PID" 2>/dev/null || true
  rm -f "$KUBECONFIG_FILE"
  if [ -z "${KEEP_CLUSTER:-}" ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

say "building $IMAGE"
docker build -f operator/Dockerfile -t "$IMAGE" \
  --build-arg VERSION="$(.venv/bin/python -c 'import foundry; print(foundry.__version__)')" \
  --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

say "starting PostgreSQL in namespace $DB_NS"
k create namespace "$DB_NS" --dry-run=client -o yaml | k apply -f -
k -n "$DB_NS" apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: postgres}
spec:
  replicas: 1
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      containers:
        - name: postgres
          image: postgres:16
          env:
            - {name: POSTGRES_USER, value: foundry}
            - {name: POSTGRES_PASSWORD, value: foundry}
            - {name: POSTGRES_DB, value: foundry}
          ports: [{containerPort: 5432}]
          readinessProbe:
            exec: {command: [pg_isready, -U, foundry]}
            periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec:
  selector: {app: postgres}
  ports: [{port: 5432, targetPort: 5432}]
YAML
k -n "$DB_NS" rollout status deploy/postgres --timeout=180s
k -n "$DB_NS" port-forward svc/postgres "$DB_PORT:5432" >/dev/null 2>&1 &
PF_PID=$!
for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$DB_PORT") 2>/dev/null && break; sleep 0.2; done

export FOUNDRY_TEST_KUBECONFIG="$KUBECONFIG_FILE"
export FOUNDRY_TEST_DATABASE_URL="postgresql+psycopg://foundry:foundry@127.0.0.1:$DB_PORT/foundry"
export FOUNDRY_E2E_DATABASE_HOST="postgres.$DB_NS.svc.cluster.local:5432"
export FOUNDRY_E2E_IMAGE="$IMAGE"
say "running pytest ${PYTEST_ARGS[*]}"
.venv/bin/python -m pytest "${PYTEST_ARGS[@]}"
