#!/usr/bin/env bash
# Debian packages the tests and benchmarks use: wrk, Chromium (browser tests), Fashion-MNIST, and
# slirp4netns (podman kube play --network slirp4netns in .ci/kube_play_test.py; podman only recommends it).
# Installed when missing and we are root with apt-get; elsewhere the tests that need them say so.
set -euo pipefail
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v chromium >/dev/null || need+=(chromium)
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v slirp4netns >/dev/null || need+=(slirp4netns)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
else
  echo "note: missing ${need[*]} (install with apt-get as root); tests that need them will be skipped" >&2
fi
