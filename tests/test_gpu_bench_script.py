"""bench/gpu_bench.py, the benchmark bench/gpu_check.sh runs on the GPU machine, run here on the CPU.

No GPU here, so this cannot check CUDA; it checks what would otherwise only fail on the GPU machine,
where time is scarce: the script starts the service with the provider asked for, reads that provider
back from the model metadata, compares answers across providers and measures V2 binary batches.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .support import ROOT


def test_gpu_bench_reads_the_provider_back_and_measures_v2_batches(tmp_path):
    figures = tmp_path / "gpu_bench.json"
    run = subprocess.run(
        [sys.executable, "bench/gpu_bench.py", "--providers", "CPUExecutionProvider", "--batches", "64",
         "--connections", "1", "--duration", "1", "--repeat", "1", "--json", str(figures)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "model metadata says 'CPUExecutionProvider'" in output and "gpu_bench OK" in output, output
    cpu = json.loads(figures.read_text())["CPUExecutionProvider"]
    assert cpu["metadata_provider"] == "CPUExecutionProvider" and cpu["max_difference"] == 0.0
    cell = cpu["cells"]["64x1"]
    assert cell["errors"] == 0 and cell["images"] == cell["rps"] * 64 > 0, cell
