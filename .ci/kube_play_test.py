"""Play deploy/k8s under ``podman kube play`` and check what a user of the pod would notice.

    source ../shared/container/podman-env.sh
    .venv/bin/python .ci/kube_play_test.py --image localhost/mnist-serving:ci

``.ci/container-test.sh`` runs this after building the image. ``deploy/render.py`` turns the
kustomization into one pod (replicas 1, this image, a test ADMIN_TOKEN in the Secret, the http port on a
free loopback port); it is played with ``--network slirp4netns`` (host networking refuses the port
mappings, and the default bridge network is not reachable here). Checks, one log line each:

- ready: the readiness route answers 200 within the startup probe's budget
  (initialDelaySeconds + periodSeconds x failureThreshold);
- a real MNIST test digit, posted as a PNG, is predicted correctly (9 of 10 at least);
- the process runs as the pod's runAsUser, not 0 (podman does not enforce runAsNonRoot; this does); the
  root filesystem is read-only, every volume the Deployment mounts is writable;
- the ConfigMap's settings are in effect: the environment is the one a kubelet computes (envFrom, then
  env, which wins -- podman 4.3 lets envFrom win, so a Deployment overriding a ConfigMap key fails here
  rather than passing on a difference), and in the log (WORKERS workers booted, INFO request lines);
- the Secret's token is accepted by the admin API, and a wrong one refused (401);
- ``/metrics`` is served with the request counters;
- feedback is on (FEEDBACK_DIR in the ConfigMap) and a labelled digit is stored on the claim's volume
  (201, the file is there);
- drain, in the order a kubelet uses: the preStop exec hook, SIGTERM with terminationGracePeriodSeconds,
  then ``podman kube down``; every request the server answered while draining reached its client, and at
  least one request in flight at SIGTERM completed with 200. (A bare ``podman kube down`` stops the pod's
  infra container -- its network namespace and port forwarder -- together with the app, which cuts the
  in-flight requests: podman 4.3 does not keep the sandbox up until the containers have stopped.)

Exit status 0 when every check passes. Pods, podman secrets and volumes (claims) it creates are removed
in all cases.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.render import render  # noqa: E402
from training.data import load_idx_folder  # noqa: E402

PODMAN = os.environ.get("PODMAN", "podman")
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
failures: list[str] = []
PREFIX = ["kube-play"]  # compose_test.py says "compose"


def log(message: str) -> None:
    print(f"{PREFIX[0]}: {message}", flush=True)


def check(name: str, ok: bool, detail: str) -> bool:
    log(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}")
    if not ok:
        failures.append(name)
    return ok


def podman(*args: str, check: bool = True, timeout: float = 120, stdin: bytes | None = None
           ) -> subprocess.CompletedProcess:
    result = subprocess.run([PODMAN, *args], capture_output=True, timeout=timeout, input=stdin)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({result.returncode}):\n"
                           f"{result.stderr.decode(errors='replace')}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ask(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None,
         timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@functools.cache
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The real MNIST test images and labels (../shared/data/mnist; MNIST_DIR to point elsewhere)."""
    data = load_idx_folder(MNIST_DIR, "mnist")
    return data.x_test, data.y_test


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


# --- the pod ---------------------------------------------------------------------------------------


class PlayedPod:
    """The rendered documents, played; the Secrets go in as podman secrets first.

    podman 4.3 stores a Secret document of the played file as YAML but reads secretKeyRef values as a
    JSON map of base64 values, so the Secrets are created here in that form (later podman reads both).
    """

    def __init__(self, documents: list[dict]) -> None:
        self.secrets = [doc for doc in documents if doc["kind"] == "Secret"]
        self.claims = [doc["metadata"]["name"] for doc in documents if doc["kind"] == "PersistentVolumeClaim"]
        self.played = [doc for doc in documents if doc["kind"] != "Secret"]
        (self.deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
        self.pod_spec = self.deployment["spec"]["template"]["spec"]
        self.pod = f"{self.deployment['metadata']['name']}-pod-0"
        self.container = f"{self.pod}-{self.pod_spec['containers'][0]['name']}"
        handle, name = tempfile.mkstemp(prefix="mnist-kube-play-", suffix=".yaml")
        with os.fdopen(handle, "w") as out:
            yaml.safe_dump_all(self.played, out, sort_keys=False)
        self.file = Path(name)
        self.up = False

    def play(self) -> None:
        for secret in self.secrets:
            podman("secret", "create", secret["metadata"]["name"], "-",
                   stdin=json.dumps(secret.get("data", {})).encode())
        self.up = True
        podman("kube", "play", "--network", "slirp4netns", str(self.file))

    def logs(self) -> str:
        out = podman("logs", self.container, check=False)
        return (out.stdout + out.stderr).decode(errors="replace")

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return podman("exec", self.container, *command, check=False)

    def running(self) -> bool:
        out = podman("inspect", "--format", "{{.State.Running}}", self.container, check=False)
        return out.stdout.decode().strip() == "true"

    def down(self) -> None:
        if self.up:
            podman("kube", "down", str(self.file), check=False)
            self.up = False
        for secret in self.secrets:
            podman("secret", "rm", secret["metadata"]["name"], check=False)
        for claim in self.claims:  # kube down keeps volumes
            podman("volume", "rm", "-f", claim, check=False)
        self.file.unlink(missing_ok=True)


def startup_budget(container: dict) -> float:
    probe = container.get("startupProbe") or container.get("readinessProbe") or {}
    return (probe.get("initialDelaySeconds", 0)
            + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3))


def wait_ready(pod: PlayedPod, port: int, started: float, budget: float) -> float | None:
    while time.monotonic() - started < budget:
        try:
            if ask(port, "GET", "/v2/health/ready", timeout=2)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        if not pod.running() and time.monotonic() - started > 5:
            return None
        time.sleep(0.25)
    return None


# --- checks while serving ----------------------------------------------------------------------------


def check_prediction(port: int) -> None:
    images, labels = (part[:10] for part in mnist_test())
    correct = 0
    for image, label in zip(images, labels, strict=True):
        status, body = ask(port, "POST", "/predict", png(image), {"Content-Type": "image/png"})
        if status == 200 and json.loads(body)["predictions"][0]["label"] == str(int(label)):
            correct += 1
    check("predict", correct >= 9, f"{correct}/10 real MNIST test digits (PNG, POST /predict) right")


def check_user_and_filesystem(pod: PlayedPod) -> None:
    want = pod.pod_spec.get("securityContext", {}).get("runAsUser")
    uid = pod.exec("id", "-u").stdout.decode().strip()
    status = pod.exec("cat", "/proc/1/status").stdout.decode()
    pid1 = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
    check("uid", uid.isdigit() and int(uid) != 0 and str(want) == uid and set(pid1) == {uid},
          f"id -u = {uid}, PID 1 uids {pid1} (runAsUser {want})")

    denied = pod.exec("touch", "/app/kube-play-probe")
    check("read-only root", denied.returncode != 0 and b"Read-only file system" in denied.stderr,
          f"touch /app/...: {denied.stderr.decode().strip() or 'allowed!'}")
    container = pod.pod_spec["containers"][0]
    for mount in container.get("volumeMounts", []):
        if mount.get("readOnly"):
            continue
        path = mount["mountPath"].rstrip("/") + "/.kube-play-probe"
        wrote = pod.exec("sh", "-c", f"echo ok > {path} && rm {path}")
        check(f"volume {mount['name']}", wrote.returncode == 0,
              f"{mount['mountPath']} writable ({wrote.stderr.decode().strip() or 'ok'})")


def kubernetes_env(container: dict, documents: list[dict]) -> dict[str, str]:
    """The environment a kubelet gives the container: envFrom in order, then env, which wins."""
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}

    def values(kind: str, name: str) -> dict[str, str]:
        doc = by_name[(kind, name)]
        if kind == "Secret":
            return {key: base64.b64decode(value).decode() for key, value in doc.get("data", {}).items()}
        return dict(doc.get("data", {}))

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret",
                                                                                              source["secretRef"])
        env.update({source.get("prefix", "") + key: value for key, value in values(kind, ref["name"]).items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif ref := item.get("valueFrom", {}).get("configMapKeyRef"):
            env[item["name"]] = values("ConfigMap", ref["name"])[ref["key"]]
        elif ref := item.get("valueFrom", {}).get("secretKeyRef"):
            env[item["name"]] = values("Secret", ref["name"])[ref["key"]]
    return env


def check_configmap(pod: PlayedPod, documents: list[dict], port: int) -> None:
    configmaps = [doc for doc in documents if doc["kind"] == "ConfigMap"]
    data = {key: value for doc in configmaps for key, value in doc.get("data", {}).items()}
    want = kubernetes_env(pod.pod_spec["containers"][0], documents)
    env = dict(line.split("=", 1) for line in pod.exec("env").stdout.decode().splitlines() if "=" in line)
    wrong = {key: f"{env.get(key)!r}, Kubernetes: {value!r}" for key, value in want.items()
             if env.get(key) != value and key != "ADMIN_TOKEN"}
    token_ok = env.get("ADMIN_TOKEN") == want.get("ADMIN_TOKEN")
    check("configmap env", not wrong and token_ok,
          f"{len(want)} variables as Kubernetes sets them ({len(data)} from the ConfigMap, the rest from "
          f"env and the Secret)" + (f"; differ: {wrong}" if wrong else "")
          + ("" if token_ok else "; ADMIN_TOKEN differs"))

    # ... and what the service made of them, in its log.
    ask(port, "GET", "/v2/models/mnist")
    lines = [json.loads(line) for line in pod.logs().splitlines() if line.startswith("{")]
    booted = sum("Booting worker" in line.get("message", "") for line in lines)
    requests_logged = sum(line.get("logger") == "service.request" for line in lines)
    workers = int(want.get("WORKERS", "0") or 0)
    if workers:
        check("configmap WORKERS", booted == workers, f"{booted} workers booted (WORKERS={workers})")
    level = want.get("LOG_LEVEL", "INFO").upper()
    if level in ("DEBUG", "INFO"):
        check("configmap LOG_LEVEL", requests_logged > 0,
              f"{requests_logged} INFO request lines in the log (LOG_LEVEL={level})")
    else:
        check("configmap LOG_LEVEL", requests_logged == 0,
              f"{requests_logged} INFO request lines in the log (LOG_LEVEL={level})")


def check_admin_token(port: int, token: str) -> None:
    status, body = ask(port, "POST", "/v2/repository/index", b"{}",
                        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    ready = [f"{row['name']}/{row['version']}" for row in json.loads(body)
             if row.get("state") == "READY"] if status == 200 else []
    check("secret ADMIN_TOKEN", status == 200 and any(r.startswith("mnist/") for r in ready),
          f"POST /v2/repository/index with the Secret's token: {status}, ready {ready}")
    wrong, _ = ask(port, "POST", "/v2/repository/index", b"{}", {"Authorization": "Bearer not-the-token"})
    check("wrong token refused", wrong == 401, f"with another token: {wrong}")


def check_metrics(port: int) -> None:
    status, body = ask(port, "GET", "/metrics")
    text = body.decode(errors="replace")
    counted = [line for line in text.splitlines()
               if line.startswith("mnist_http_requests_total{") and 'route="/predict"' in line]
    check("metrics", status == 200 and bool(counted),
          f"GET /metrics {status}, {len(text.splitlines())} lines, e.g. {counted[0] if counted else 'none'}")


def post_feedback(port: int, label: int = 7) -> tuple[int, dict]:
    """POST one real MNIST test digit as feedback labelled ``label``: (status, JSON body)."""
    image = mnist_test()[0][0]
    status, body = ask(port, "POST", f"/v1/models/mnist/feedback?label={label}", png(image),
                       {"Content-Type": "image/png"})
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"error": body[:200].decode(errors="replace")}


def check_feedback(port: int, container_exec, feedback_dir: str | None) -> dict:
    """Feedback is on and lands on the volume at FEEDBACK_DIR: 201, and the picture's file is there."""
    status, body = post_feedback(port)
    found = ""
    if status in (200, 201) and feedback_dir and body.get("stored"):
        listing = container_exec("find", feedback_dir, "-name", f"{body['stored']}.*")
        found = listing.stdout.decode().strip()
    check("feedback stored", status == 201 and bool(found),
          f"POST /v1/models/mnist/feedback?label=7: {status} {str(body)[:160]}; on the volume: {found or 'no file'}")
    return body


# --- drain ---------------------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Requests sent while the pod is stopped: each thread sends one after another until SIGTERM."""

    sigterm_at: float = 0.0
    answered: dict[str, int] = field(default_factory=dict)  # request id -> status
    in_flight_ok: int = 0  # started before SIGTERM, answered 200 after it
    lost: dict[str, str] = field(default_factory=dict)  # request id -> what the client saw
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def _send(port: int, body: bytes, traffic: Traffic) -> None:
    while not traffic.stop.is_set():
        rid = uuid.uuid4().hex
        started = time.monotonic()
        try:
            status, _ = ask(port, "POST", "/predict?top_k=1", body,
                             {"Content-Type": "application/json", "X-Request-ID": rid, "Connection": "close"},
                             timeout=60)
        except (OSError, http.client.HTTPException) as exc:
            with traffic.lock:
                traffic.lost[rid] = type(exc).__name__
            return
        with traffic.lock:
            traffic.answered[rid] = status
            if status == 200 and traffic.sigterm_at and started < traffic.sigterm_at:
                traffic.in_flight_ok += 1


def drain(pod: PlayedPod, port: int, order: str) -> None:
    container = pod.pod_spec["containers"][0]
    grace = pod.pod_spec.get("terminationGracePeriodSeconds", 30)
    images = mnist_test()[0][:1000]
    # Big enough that requests are surely being worked on when SIGTERM arrives.
    body = json.dumps({"instances": (images.reshape(len(images), -1) / 255.0).round(3).tolist()}).encode()
    traffic = Traffic()
    threads = [threading.Thread(target=_send, args=(port, body, traffic), daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)

    started = time.monotonic()
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if pre_stop and order == "kubelet":  # podman ignores lifecycle hooks; run it as the kubelet would
        pod.exec(*pre_stop)
    pre_stop_s = time.monotonic() - started

    left = max(1, int(grace - pre_stop_s))
    traffic.sigterm_at = time.monotonic()
    traffic.stop.set()  # no new requests after SIGTERM: every one still open was in flight
    if order == "kubelet":  # the app container first; the pod (infra: network, port forward) after it
        stopped = podman("stop", "-t", str(left), pod.container, check=False, timeout=grace + 30)
    else:  # what `podman kube down` does first: stop every container of the pod at once
        stopped = podman("pod", "stop", "-t", str(left), pod.pod, check=False, timeout=grace + 30)
    term_s = time.monotonic() - traffic.sigterm_at
    for thread in threads:
        thread.join(30)
    exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", pod.container, check=False)
    exit_code = exit_code.stdout.decode().strip()
    logs = pod.logs()
    served = {}
    for line in logs.splitlines():
        if line.startswith("{") and '"service.request"' in line:
            entry = json.loads(line)
            served[entry.get("request_id")] = entry.get("status")
    shutdown = [f"{entry['timestamp'][11:23]} {entry['message']}" for entry in map(json.loads, (
        line for line in logs.splitlines() if line.startswith("{") and '"gunicorn.error"' in line))
        if any(word in entry["message"] for word in ("Handling signal", "Worker exiting", "Shutting down"))]
    log(f"drain log: {' | '.join(shutdown)}")

    down_started = time.monotonic()
    pod.down()
    down_s = time.monotonic() - down_started
    total = time.monotonic() - started

    # A request the server answered must have reached its client: nothing cut on the way out.
    cut = {rid: seen for rid, seen in traffic.lost.items() if rid in served}
    errors = {rid: status for rid, status in traffic.answered.items() if status >= 500}
    log(f"drain ({order} order): preStop {pre_stop_s:.1f} s, SIGTERM -> exit {term_s:.1f} s (exit code {exit_code}), "
        f"kube down {down_s:.1f} s, total {total:.1f} s of terminationGracePeriodSeconds {grace}")
    check("drain in time", stopped.returncode == 0 and exit_code == "0" and total < grace,
          f"stopped in {total:.1f} s < {grace} s, exit code {exit_code} (137 would be SIGKILL)")
    check("in-flight requests", traffic.in_flight_ok >= 1 and not cut and not errors,
          f"{traffic.in_flight_ok} in flight at SIGTERM completed 200; {len(traffic.answered)} answered, "
          f"{len(traffic.lost)} not answered (never reached the server: {len(traffic.lost) - len(cut)}), "
          f"cut after the server answered: {len(cut)}, 5xx: {len(errors)}")


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True, help="the image just built, e.g. localhost/mnist-serving:ci")
    parser.add_argument("--manifests", type=Path, default=ROOT / "deploy" / "k8s",
                        help="the kustomization folder (default: deploy/k8s)")
    parser.add_argument("--stop-order", choices=("kubelet", "pod"), default="kubelet",
                        help="kubelet: preStop, SIGTERM to the app, then kube down (default); pod: "
                        "`podman pod stop` as a bare `podman kube down` does (cuts in-flight requests)")
    args = parser.parse_args(argv)

    port = free_port()
    token = base64.urlsafe_b64encode(os.urandom(18)).decode()
    documents = render(args.image, host_port=port, secrets={"ADMIN_TOKEN": token}, suffix=f"-ci{os.getpid()}",
                       folder=args.manifests)
    pod = PlayedPod(documents)
    container = pod.pod_spec["containers"][0]
    budget = startup_budget(container)
    names = ", ".join(f"{doc['kind']}/{doc['metadata']['name']}" for doc in documents)
    log(f"playing {names} with image {args.image}, http on 127.0.0.1:{port}")
    try:
        started = time.monotonic()
        pod.play()
        ready_s = wait_ready(pod, port, started, budget)
        if not check("ready", ready_s is not None,
                     f"ready in {ready_s:.1f} s (startup probe budget {budget:.0f} s)" if ready_s is not None
                     else f"not ready within {budget:.0f} s:\n{pod.logs()[-3000:]}"):
            return 1
        check_prediction(port)
        check_user_and_filesystem(pod)
        check_configmap(pod, documents, port)
        check_admin_token(port, token)
        check_metrics(port)
        check_feedback(port, pod.exec, kubernetes_env(container, documents).get("FEEDBACK_DIR"))
        drain(pod, port, args.stop_order)
    finally:
        pod.down()
        leftover = podman("pod", "exists", pod.pod, check=False).returncode == 0
        if leftover:
            check("cleanup", False, f"pod {pod.pod} still exists after podman kube down")
    log("all checks passed" if not failures else f"FAILED: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
