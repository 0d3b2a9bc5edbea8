"""V2 binary batches on the CPU and on the CUDA provider: same server settings, same load driver.

    python bench/gpu_bench.py                                  # what bench/gpu_check.sh runs on the GPU machine
    python bench/gpu_bench.py --providers CPUExecutionProvider --duration 2   # a dry run anywhere

For each provider in turn the service is started as README starts it (2 gevent workers) with
``ORT_PROVIDERS=<provider>``; before any load it must name that provider in the model metadata
(``GET /v2/models/mnist``: ``parameters.provider``) and answer a batch with the same digits as the first provider
(probabilities within ``--tolerance``). Then V2 binary batches (the binary tensor extension, [N, 784]
FP32) in closed loops from ``--connections`` client processes (grpc_bench.py's REST client), ``--repeat``
runs per cell, medians shown: req/s, images/s, p50/p99 ms and server CPU per request, and each
provider's images/s as a ratio to the first one's. Inputs are the MNIST test images where the IDX files
are, else a fixed synthetic batch (the GPU machine has no data set; speed does not depend on the values).
Exit status 1 when a provider is not the one asked for or answers differently; the figures assert nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.grpc_bench import Call, median_cell, run_cell  # noqa: E402
from bench.payloads import v2_binary  # noqa: E402
from bench.server import MNIST_DIR, MODELS, GunicornServer, mnist_test_set  # noqa: E402
from service.contract import FEATURES, NUM_CLASSES  # noqa: E402

MODEL = "mnist"
PATH = f"/v2/models/{MODEL}/infer"


def inputs(count: int) -> tuple[np.ndarray, str]:
    """``count`` rows [count, 784] in [0, 1], and where they came from."""
    if (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        images, _ = mnist_test_set()
        rows = np.resize(images.reshape(-1, FEATURES), (count, FEATURES))
        return rows.astype(np.float32) / 255.0, "MNIST test images"
    golden = (1 + 5 ** 0.5) / 2
    return (np.modf(np.arange(1, count * FEATURES + 1) * golden)[0].astype(np.float32).reshape(count, FEATURES),
            "synthetic rows (no MNIST files here)")


def call(x: np.ndarray) -> Call:
    body, header = v2_binary(x)
    return Call("rest", PATH, body, len(x), {"Content-Type": "application/octet-stream",
                                            "Inference-Header-Content-Length": str(header)})


def probabilities(url: str, x: np.ndarray) -> np.ndarray:
    """The service's answer to one V2 binary batch, as an array [N, 10]."""
    request = call(x)
    response = requests.post(url + PATH, data=request.body, headers=request.headers, timeout=60)
    response.raise_for_status()
    length = int(response.headers["Inference-Header-Content-Length"])
    return np.frombuffer(response.content[length:], "<f4").reshape(len(x), NUM_CLASSES)


def served_provider(url: str) -> str:
    return requests.get(f"{url}/v2/models/{MODEL}", timeout=10).json()["parameters"]["provider"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", default="CPUExecutionProvider,CUDAExecutionProvider")
    parser.add_argument("--batches", default="1024,64", help="rows per request, comma list")
    parser.add_argument("--connections", default="1,8")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest probability difference allowed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    providers = [p for p in args.providers.split(",") if p]
    batches = [int(b) for b in args.batches.split(",")]
    conns = [int(c) for c in args.connections.split(",")]
    x, source = inputs(max(batches))
    check = x[:256]

    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; inputs: {source}")
    results: dict[str, dict] = {}
    reference: np.ndarray | None = None
    problems: list[str] = []
    for provider in providers:
        server = GunicornServer(MODELS, env={"ORT_PROVIDERS": provider}, workers=2).start(timeout=180)
        try:
            serving = served_provider(server.url)
            answer = probabilities(server.url, check)
            if reference is None:
                reference = answer
            difference = float(np.abs(answer - reference).max())
            same_digits = bool((answer.argmax(1) == reference.argmax(1)).all())
            print(f"\n{provider}: model metadata says {serving!r}; ready {server.ready_seconds:.2f} s; "
                  f"largest probability difference from {providers[0]} {difference:.2e}, same digits: {same_digits}")
            if serving != provider:
                problems.append(f"{provider}: the model is served on {serving!r}")
            if difference > args.tolerance or not same_digits:
                problems.append(f"{provider}: answers differ from {providers[0]} (max {difference:.2e})")
            cells = {}
            for rows in batches:
                for c in conns:
                    cell = median_cell([run_cell(server, "", call(x[:rows]), c, args.duration)
                                        for _ in range(args.repeat)])
                    cells[f"{rows}x{c}"] = cell
                    print(f"  batch {rows:5d}, {c:2d} connections: {cell['rps']:8,.1f} req/s "
                          f"{cell['images']:11,.0f} images/s  p50 {cell['p50']:7.2f} ms  p99 {cell['p99']:7.2f} ms  "
                          f"CPU {cell['cpu_us']:8,.0f} µs/req  errors {cell['errors']} {cell['first_error']}")
            results[provider] = {"metadata_provider": serving, "max_difference": difference,
                                 "ready_s": server.ready_seconds, "cells": cells}
        finally:
            server.stop()

    first = providers[0]
    if len(results) > 1 and first in results:
        print(f"\nimages/s as a ratio to {first} (same cell):")
        for provider in providers[1:]:
            for key, cell in results.get(provider, {}).get("cells", {}).items():
                base = results[first]["cells"][key]["images"]
                print(f"  {provider} {key}: {cell['images'] / base:.2f}x" if base else f"  {provider} {key}: –")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("\ngpu_bench " + ("FAIL" if problems else "OK"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
