#!/usr/bin/env bash
# The test suite against a real cluster, for those who have Docker and kind
# (it cannot run on the development machines, which have no Docker engine).
#
#   tools/kind-e2e.sh            create (or reuse) the kind cluster, build and load the image,
#                                run PostgreSQL in it, then run the chart, RBAC and image tests
#                                and the real-node tests (pods really run)
#   tools/kind-e2e.sh -- ARGS    pass ARGS to pytest instead (e.g. `-- tests/` for everything)
#   tools/kind-e2e.sh load-image TARBALL REF
#                                load a docker-archive onto the kind nodes under REF (the
#                                real-node fixture's image loader; KIND_CLUSTER names the cluster)
#   KEEP_CLUSTER=1 ...           leave the cluster running afterwards
#
# It is the same test code as `make test`: FOUNDRY_TEST_KUBECONFIG points the
# kube fixtures and the real-node fixture at the kind cluster,
# FOUNDRY_TEST_DATABASE_URL the postgres fixtures at the in-cluster PostgreSQL
# (through a port-forward), and the helm tests install the chart with the
# image built here. In a real cluster the migration hook Job runs for real, so
# the tests wait for it instead of playing the kubelet. The real-node tests
# bind their stand-ins on the kind network's gateway (FOUNDRY_TEST_NODE_IP, the
# host as pods see it) and load the images tools/images.sh builds with
# `kind load image-archive` (FOUNDRY_TEST_IMAGE_LOADER). Left out: the tests of
# the local node's own mechanics (tests/test_node_cluster.py: slots, teardown).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-foundry-e2e}"
IMAGE="${FOUNDRY_E2E_IMAGE:-foundry:e2e}"
DB_NS=foundry-e2e-db
DB_PORT="${FOUNDRY_E2E_DB_PORT:-55432}"
NODE_TESTS=(tests/test_agent_pod_node.py tests/test_operator_pod_failures_node.py tests/test_images_node.py
            tests/test_helm_node.py)
PYTEST_ARGS=(tests/test_helm_install.py tests/test_rbac_least_privilege.py tests/test_helm_chart.py tests/test_image.py
             "${NODE_TESTS[@]}")

say() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { printf '[kind-e2e] error: %s\n' "$*" >&2; exit 1; }
# The image name as containerd stores it and the kubelet asks for it (busybox:1 -> docker.io/library/busybox:1).
normalized() { .venv/bin/python -c 'import sys; from foundry.dev.node_images import normalize_ref as n
print(" ".join(n(r) for r in sys.argv[1:]))' "$@"; }

load_image() {  # TARBALL REF: onto every node of the cluster, under REF
  [ $# = 2 ] || die "usage: $0 load-image TARBALL REF"
  local tar="$1" want have node
  [ -f "$tar" ] || die "no image tarball $tar"
  want="$(normalized "$2")"
  kind load image-archive "$tar" --name "$CLUSTER" >&2
  # kind names the image as the archive does; a test may ask for another name (the chart's).
  have="$(tar -xOf "$tar" manifest.json 2>/dev/null | .venv/bin/python -c 'import json, sys
print(" ".join(t for e in json.load(sys.stdin) for t in e.get("RepoTags") or []))' || true)"
  [ -n "$have" ] || die "$tar is not a docker-archive with a tag (tools/images.sh makes those)"
  have="$(normalized $have)"
  case " $have " in *" $want "*) return 0 ;; esac
  for node in $(kind get nodes --name "$CLUSTER"); do
    docker exec "$node" ctr --namespace k8s.io images tag --force "${have%% *}" "$want" >&2
  done
}

case "${1:-}" in
  --) shift; PYTEST_ARGS=("$@") ;;
  load-image) shift; load_image "$@"; exit 0 ;;
esac
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

say "building the Foundry, agent and PostgreSQL images for the real-node tests (tools/images.sh)"
bash tools/images.sh >/dev/null
# The host as pods see it: the gateway of kind's Docker network (its IPv4 one).
NODE_IP="$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -m1 -E '^[0-9.]+$' || true)"
[ -n "$NODE_IP" ] || die "cannot find the IPv4 gateway of Docker network kind"

export KIND_CLUSTER="$CLUSTER"
export FOUNDRY_TEST_KUBECONFIG="$KUBECONFIG_FILE"
export FOUNDRY_TEST_NODE_IP="$NODE_IP"
export FOUNDRY_TEST_IMAGE_LOADER="bash $PWD/tools/kind-e2e.sh load-image"
export FOUNDRY_TEST_DATABASE_URL="postgresql+psycopg://foundry:foundry@127.0.0.1:$DB_PORT/foundry"
export FOUNDRY_E2E_DATABASE_HOST="postgres.$DB_NS.svc.cluster.local:5432"
export FOUNDRY_E2E_IMAGE="$IMAGE"
say "running pytest ${PYTEST_ARGS[*]}"
.venv/bin/python -m pytest "${PYTEST_ARGS[@]}"
