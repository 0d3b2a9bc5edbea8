#!/usr/bin/env bash
# Build the real serving image with podman and test it (tests/test_container.py): health, a real
# MNIST digit over HTTP, non-root, read-only root filesystem, hot reload from a volume, graceful
# SIGTERM; then play deploy/k8s with podman kube play (.ci/kube_play_test.py: the Deployment's pod,
# its ConfigMap and Secret, drain within the grace period) and compose.yaml with podman-compose
# (.ci/compose_test.py). Prints the image size and what it adds over python:3.11-slim. Exits non-zero on any failure and removes every container it started.
#
#   bash .ci/container-test.sh                      # image tag: mnist-serving:ci
#   CONTAINER_IMAGE=mnist-serving:dev bash .ci/container-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${CONTAINER_IMAGE:-mnist-serving:ci}
BASE=docker.io/library/python:3.11-slim
PODMAN_ENV=${PODMAN_ENV:-../shared/container/podman-env.sh}
PYTHON=${PYTHON:-.venv/bin/python}
export CONTAINER_PREFIX="mnist-ct-$$"

echo "== container: podman"
# podman on this host (no Docker engine, no registry): podman itself and a local python:3.11-slim.
set +u
# shellcheck disable=SC1090
source "$PODMAN_ENV"
set -u
command -v podman >/dev/null || { echo "container-test: podman is not available" >&2; exit 1; }
podman image exists "$BASE" || { echo "container-test: base image $BASE is missing" >&2; exit 1; }

cleanup() {
  local ids
  ids=$(podman ps -a -q --filter "name=^${CONTAINER_PREFIX}-" 2>/dev/null || true)
  [ -z "$ids" ] || podman rm -f -t 5 $ids >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

# The image serves the committed models/: without a model there is nothing to test.
if ! compgen -G "models/mnist/*/model.onnx" >/dev/null; then
  echo "container-test: models/mnist/<version>/model.onnx is missing (train and commit a model first)" >&2
  exit 1
fi

echo "== container: build $IMAGE"
start=$(date +%s)
podman build --network host --pull=never --format docker \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$IMAGE" .
echo "built in $(( $(date +%s) - start )) s"

size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE")
awk -v s="$size" -v b="$base_size" 'BEGIN {
  printf "image size: %.1f MB (%s); over the base image: %.1f MB (base %.1f MB)\n", s/1e6, s, (s-b)/1e6, b/1e6 }'

echo "== container: tests"
CONTAINER_IMAGE="$IMAGE" "$PYTHON" -m pytest tests/test_container.py -m container -p no:cacheprovider -q -rs
echo "== container: deploy/k8s under podman kube play"
# The Deployment as a cluster would run it (ConfigMap, Secret, probes, security context, grace period),
# one replica of this image: ready, predicts, uid, read-only root, settings, token, metrics, drain.
"$PYTHON" .ci/kube_play_test.py --image "$IMAGE"
echo "== container: compose.yaml under podman-compose"
"$PYTHON" .ci/compose_test.py --image "$IMAGE"
# Keep the shared podman storage from filling up with the untagged images earlier builds left.
podman image prune -f >/dev/null 2>&1 || true
echo "== container: done"
