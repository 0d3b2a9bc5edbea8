"""Run compose.yaml with podman-compose (PyPI) against the image just built, and check it.

    source ../shared/container/podman-env.sh
    .venv/bin/python .ci/compose_test.py --image localhost/mnist-serving:ci

``podman-compose up -d --no-build`` of the ``mnist-serving`` service (the monitoring profile needs the
prom/prometheus image, which no registry here serves), with the image set by an override file (compose
would build its own otherwise) and ``HOST_PORT`` a free loopback port. Checks: ready within the
healthcheck's budget, a real digit predicted, uid not 0, read-only root with /tmp writable, ``/metrics``,
feedback stored on the named volume, ``podman-compose stop`` within ``stop_grace_period``, and after
``podman-compose start`` the same feedback is still there (answered "already stored", 200). The project
and its volumes are removed in all cases (``down -v``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kube_play_test import (
    PREFIX,
    ROOT,
    ask,
    check,
    check_feedback,
    check_metrics,
    check_prediction,
    failures,
    free_port,
    log,
    podman,
    post_feedback,
)

COMPOSE = ROOT / "compose.yaml"
SERVICE = "mnist-serving"


def seconds(text: str) -> float:
    """Compose durations: 10s, 1m30s, 500ms."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    args = parser.parse_args(argv)
    PREFIX[0] = "compose"
    compose_bin = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")

    service = yaml.safe_load(COMPOSE.read_text())["services"][SERVICE]
    health = service["healthcheck"]
    budget = seconds(health["start_period"]) + seconds(health["interval"]) * health["retries"]
    grace = seconds(service["stop_grace_period"])
    port = free_port()
    project = f"mnist-compose-{os.getpid()}"
    override = Path(tempfile.mkstemp(prefix="mnist-compose-", suffix=".yaml")[1])
    override.write_text(yaml.safe_dump({"services": {SERVICE: {"image": args.image}}}))
    env = {**os.environ, "HOST_PORT": str(port), "GRPC_HOST_PORT": str(free_port())}
    base = [compose_bin, "-p", project, "-f", str(COMPOSE), "-f", str(override)]

    def compose(*command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *command], capture_output=True, text=True, env=env, timeout=timeout)

    log(f"{compose_bin} up {SERVICE} with image {args.image}, http on 127.0.0.1:{port}")
    try:
        started = time.monotonic()
        up = compose("up", "-d", "--no-build", SERVICE)
        failed = f": {up.stderr[-800:].strip()}" if up.returncode else ""
        if not check("compose up", up.returncode == 0, f"exit {up.returncode}{failed}"):
            return 1
        container = compose("ps", "-q").stdout.split()[-1:] or [""]
        container = container[0]
        ready_s = None
        while time.monotonic() - started < budget:
            try:
                if ask(port, "GET", "/v2/health/ready", timeout=2)[0] == 200:
                    ready_s = time.monotonic() - started
                    break
            except OSError:
                pass
            time.sleep(0.25)
        if not check("compose ready", ready_s is not None,
                     f"ready in {ready_s:.1f} s (healthcheck budget {budget:.0f} s)" if ready_s is not None
                     else f"not ready in {budget:.0f} s"):
            return 1
        check_prediction(port)
        uid = podman("exec", container, "id", "-u", check=False).stdout.decode().strip()
        check("compose uid", uid.isdigit() and int(uid) != 0, f"id -u = {uid}")
        denied = podman("exec", container, "touch", "/app/compose-probe", check=False)
        tmp = podman("exec", container, "touch", "/tmp/compose-probe", check=False)
        check("compose read-only root", denied.returncode != 0 and tmp.returncode == 0,
              f"/app: {denied.stderr.decode().strip() or 'writable!'}; /tmp writable: {tmp.returncode == 0}")
        check_metrics(port)
        stored = check_feedback(port, lambda *cmd: podman("exec", container, *cmd, check=False),
                                service["environment"].get("FEEDBACK_DIR"))
        health_run = podman("healthcheck", "run", container, check=False)
        check("compose healthcheck", health_run.returncode == 0,
              f"podman healthcheck run: {(health_run.stdout + health_run.stderr).decode().strip() or 'healthy'}")

        stop_started = time.monotonic()
        stopped = compose("stop", timeout=grace + 30)
        stop_s = time.monotonic() - stop_started
        code = podman("inspect", "--format", "{{.State.ExitCode}}", container, check=False).stdout.decode().strip()
        check("compose stop", stopped.returncode == 0 and code == "0" and stop_s < grace,
              f"podman-compose stop in {stop_s:.1f} s < stop_grace_period {grace:.0f} s, exit code {code}")

        # The feedback store is on a named volume: a new start of the container still has it.
        restarted = compose("start", SERVICE)
        again_started, again = time.monotonic(), None
        while restarted.returncode == 0 and time.monotonic() - again_started < budget:
            try:
                if ask(port, "GET", "/v2/health/ready", timeout=2)[0] == 200:
                    again = post_feedback(port)
                    break
            except OSError:
                pass
            time.sleep(0.25)
        check("compose feedback kept", again is not None and again[0] == 200  # 200: already stored (201: new)
              and again[1].get("stored") == stored.get("stored") is not None,
              f"after stop and start, the same feedback again: {again and (again[0], str(again[1])[:160])}")
    finally:
        down = compose("down", "-v", timeout=grace + 60)
        left = podman("ps", "-a", "-q", "--filter", f"label=io.podman.compose.project={project}", check=False)
        check("compose down", down.returncode == 0 and not left.stdout.strip(),
              f"project removed (exit {down.returncode})")
        override.unlink(missing_ok=True)
    log("all checks passed" if not failures else f"FAILED: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
