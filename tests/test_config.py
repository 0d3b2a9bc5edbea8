"""Settings from the environment: what an operator sees for a bad value, which execution provider
'auto' picks, and how many cores the service thinks it may use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.config import load_settings
from service.runtime import ModelLoadError, onnxruntime, resolve_providers

from .inprocess import make_app
from .support import ROOT, free_port


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WORKERS", "two", "WORKERS must be an integer, got 'two'"),
        ("MAX_BATCH_ITEMS", "1e3", "MAX_BATCH_ITEMS must be an integer, got '1e3'"),
        ("POLL_INTERVAL_S", "soon", "POLL_INTERVAL_S must be a number, got 'soon'"),
        ("BATCH_MAX_DELAY_MS", "2ms", "BATCH_MAX_DELAY_MS must be a number, got '2ms'"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as info:
        load_settings()
    assert str(info.value) == message


def test_gunicorn_refuses_to_start_with_a_bad_value_and_says_which(tmp_path):
    env = {**os.environ, "WORKERS": "two", "HOST": "127.0.0.1", "PORT": str(free_port()),
           "RUNTIME_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn.conf.py"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "WORKERS must be an integer, got 'two'" in result.stderr


def test_auto_providers_fall_back_to_cpu_where_cuda_is_missing():
    available = onnxruntime().get_available_providers()
    chosen = resolve_providers(("auto",))
    assert chosen[-1] == "CPUExecutionProvider" and set(chosen) <= set(available)
    assert ("CUDAExecutionProvider" in chosen) == ("CUDAExecutionProvider" in available)
    if "CUDAExecutionProvider" not in available:
        assert chosen == ["CPUExecutionProvider"]
        with pytest.raises(ModelLoadError) as info:  # asked for by name, it is an error, not a fallback
            resolve_providers(("CUDAExecutionProvider",))
        assert "['CUDAExecutionProvider'] are not available" in str(info.value)


def test_auto_serves_and_an_unavailable_provider_is_a_refusal_with_its_reason(tmp_path, monkeypatch):
    if "CUDAExecutionProvider" in onnxruntime().get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing to fall back from")
    auto = make_app(monkeypatch, tmp_path, ORT_PROVIDERS="auto").test_client()
    assert auto.get("/v2/health/ready").status_code == 200
    cuda = make_app(monkeypatch, tmp_path, ORT_PROVIDERS="CUDAExecutionProvider",
                    ADMIN_TOKEN="t").test_client()
    assert cuda.get("/v2/health/ready").status_code == 503
    rows = cuda.post("/v2/repository/index", headers={"Authorization": "Bearer t"}).json
    assert rows and all(row["state"] == "UNAVAILABLE" for row in rows), rows
    assert all("['CUDAExecutionProvider'] are not available" in row["reason"] for row in rows), rows


def test_workers_default_to_the_cores_this_process_may_use():
    """WORKERS=0 follows the CPU affinity mask (taskset, cpusets), not the host's core count."""
    code = "from service.config import load_settings as s; print(s().worker_count(), s().ort_threads())"
    one_core = {sorted(os.sched_getaffinity(0))[0]}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "WORKERS": "0", "ORT_THREADS": "0"},
                            preexec_fn=lambda: os.sched_setaffinity(0, one_core))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]


def test_glibc_malloc_thresholds_are_set_unless_the_operator_set_them(monkeypatch) -> None:
    """service/malloc.py: the server keeps request-sized buffers in the heap, but an operator's own
    glibc setting (read by glibc at start-up) is never overridden."""
    import platform

    from service.malloc import keep_request_buffers_in_heap

    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert keep_request_buffers_in_heap() is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")  # other tunables: still set
    assert keep_request_buffers_in_heap() is (platform.libc_ver()[0] == "glibc")
    for setting in ("MALLOC_MMAP_THRESHOLD_=1048576", "GLIBC_TUNABLES=glibc.malloc.trim_threshold=0"):
        name, _, value = setting.partition("=")
        with monkeypatch.context() as env:
            env.setenv(name, value)
            assert keep_request_buffers_in_heap() is False
