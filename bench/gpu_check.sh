#!/usr/bin/env bash
# Issue 15 item 4: the service on onnxruntime's CUDA provider, checked and measured on the GPU machine.
#
#   bash bench/gpu_check.sh prepare   # here: wheels for the GPU machine's Python 3.12, in parts .gpu1 ... .gpuN
#   bash bench/gpu_check.sh have      # there: which parts have arrived (the command of every call but the last)
#   bash bench/gpu_check.sh run       # there, once every part is there: install, check, benchmark
#
# Why in parts: the GPU machine reaches no package registry (make install cannot run there), and one call
# of the device tool carries at most 64 MiB beside the working tree, while the onnxruntime-gpu wheel alone
# is 256 MB. `prepare` downloads the wheels the machine's image lacks (pinned by constraints.txt; the
# image already has CUDA 13, cuDNN 9 and the rest as nvidia-* wheels) and onnxruntime-gpu, packs them into
# one tar and splits it into folders of at most 58 MiB. Each device call carries one folder, in order,
# back to back: the machine keeps the ignored folders earlier calls left in the checkout for as long as it
# stays warm (30 s after each call), and `run` refuses (exit 2) unless the whole tar is there and its
# sha256 matches. `prepare` prints the calls. Budget: about 1-2 min to start the machine, a few seconds
# per part, then `run` (install ~30 s, two servers and 8 benchmark cells: about 3 min; timeout 420 s).
#
# onnxruntime-gpu is pinned by ORT_GPU_VERSION, not by constraints.txt: constraints.txt pins onnxruntime
# 1.32.0, which has no onnxruntime-gpu release yet (1.31.1 is the newest, also the Dockerfile's GPU pin).
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}
PART_SIZE=${PART_SIZE:-58M}
STAGE=.gpu-stage
WORK=${GPU_CHECK_DIR:-/tmp/gpu-check}

# What the GPU machine's image lacks (or holds at other versions) of the serving dependencies. Pinned by
# constraints.txt; no dependencies resolved (--no-deps): this is the whole list.
WHEELS=(flask werkzeug jinja2 markupsafe itsdangerous click blinker gunicorn packaging gevent greenlet
        zope.event zope.interface orjson pysimdjson pyspng prometheus-client numpy pillow flatbuffers)

prepare() {
    local python=${PYTHON:-.venv/bin/python}
    rm -rf "$STAGE" .gpu[0-9]*
    mkdir -p "$STAGE/wheels"
    local platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
                     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -c constraints.txt -d "$STAGE/wheels" "${WHEELS[@]}" "onnxruntime-gpu==$ORT_GPU_VERSION"
    tar -cf "$STAGE/wheels.tar" -C "$STAGE" wheels
    (cd "$STAGE" && sha256sum wheels.tar > wheels.tar.sha256)
    split -b "$PART_SIZE" -d -a 2 "$STAGE/wheels.tar" "$STAGE/part-"
    local parts=("$STAGE"/part-*) i=0
    for part in "${parts[@]}"; do
        i=$((i + 1))
        mkdir ".gpu$i"
        mv "$part" ".gpu$i/"
        cp "$STAGE/wheels.tar.sha256" ".gpu$i/"
        echo "${#parts[@]}" > ".gpu$i/parts"
    done
    echo "wheels:" "$STAGE"/wheels/*.whl
    rm -rf "$STAGE"  # only the parts travel
    echo "now, through the device tool, back to back (each within 30 s of the last):"
    for ((j = 1; j < i; j++)); do
        echo "  run(carry=[\".gpu$j\"], command=\"bash bench/gpu_check.sh have\", timeout_s=60)"
    done
    echo "  run(carry=[\".gpu$i\"], command=\"bash bench/gpu_check.sh run\", timeout_s=480)"
}

expected_parts() {  # how many parts `prepare` made, as any part that has arrived says
    local f
    for f in .gpu[0-9]*/parts; do
        if [ -f "$f" ]; then cat "$f"; return; fi
    done
}

have() {
    local expected here=(.gpu[0-9]*)
    expected=$(expected_parts)
    echo "parts here: ${here[*]} (of ${expected:-?})"
}

run() {
    local python=${PYTHON:-python3} out=${OUT:-$WORK/out}
    local expected
    expected=$(expected_parts)
    for ((i = 1; i <= ${expected:-1}; i++)); do
        if [ ! -d ".gpu$i" ]; then
            have
            echo "part .gpu$i is missing (the machine went back between calls?): carry every part again" >&2
            exit 2
        fi
    done
    rm -rf "$WORK/site" "$WORK/wheels"
    mkdir -p "$WORK" "$out"
    for ((i = 1; i <= expected; i++)); do cat .gpu"$i"/part-*; done > "$WORK/wheels.tar"
    cp .gpu1/wheels.tar.sha256 "$WORK/"
    (cd "$WORK" && sha256sum -c wheels.tar.sha256) || exit 2
    tar -xf "$WORK/wheels.tar" -C "$WORK"
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WORK"/wheels/*.whl
    export PYTHONPATH="$WORK/site" PYTHONUNBUFFERED=1
    # onnxruntime's CUDA provider dlopens CUDA 13 and cuDNN 9: those of the image's nvidia-* wheels.
    local libs
    libs=$("$python" -c 'import glob, os, site
print(":".join(sorted({os.path.dirname(p) for s in site.getsitepackages()
                      for p in glob.glob(os.path.join(s, "nvidia", "**", "lib*.so*"), recursive=True)})))')
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$python" -c 'import flask, gevent, numpy, onnxruntime as ort
print("onnxruntime", ort.__version__, ort.get_available_providers(), "numpy", numpy.__version__,
      "flask", flask.__version__, "gevent", gevent.__version__)'
    timeout 420 "$python" bench/gpu_bench.py --json "$out/gpu_bench.json" 2>&1 | tee "$out/gpu_bench.txt"
}

case "${1:-}" in
    prepare) prepare ;;
    have) have ;;
    run) run ;;
    *) echo "usage: bash bench/gpu_check.sh prepare|have|run" >&2; exit 64 ;;
esac
