"""Deployment files, checked offline: Kubernetes manifests against the API schemas (kubernetes-validate
ships them), the KServe InferenceService structurally, compose.yaml and deploy/prometheus.yml, and the
Dockerfile's contract (what the manifests rely on: port, UID, health routes, env-only configuration).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
K8S_VERSION = kubernetes_validate.latest_version()  # schemas shipped with the package, no network
SETTINGS_ENV = {f.metadata["env"] for f in fields(Settings)}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_resources() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(f"{path.name}:{doc['kind']}", doc) for doc in documents(path)]
    return found


def by_kind(kind: str) -> dict:
    matches = [doc for _, doc in k8s_resources() if doc["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind} in deploy/k8s, found {len(matches)}"
    return matches[0]


def dockerfile_uid() -> int:
    text = (ROOT / "Dockerfile").read_text()
    runtime = text[text.index("AS runtime"):]
    return int(re.search(r"^USER\s+(\d+)", runtime, re.M).group(1))


# --- Kubernetes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "resource"), k8s_resources(), ids=[n for n, _ in k8s_resources()])
def test_k8s_manifest_valid_against_schema(name: str, resource: dict) -> None:
    try:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_k8s_has_every_kind() -> None:
    kinds = sorted(doc["kind"] for _, doc in k8s_resources())
    assert kinds == sorted(["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                            "Service"])
    assert by_kind("HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_deployment_probes_security_and_resources() -> None:
    deployment = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 8000

    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", 8000)

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])

    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid() != 0

    # The only writable paths are emptyDirs: /tmp, and RUNTIME_DIR (metrics, admin state) on a volume of
    # its own, so that temporary files cannot fill it.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert_runtime_dir_has_its_own_volume(mounts, volumes, by_kind("ConfigMap")["data"]["RUNTIME_DIR"])

    # Graceful stop: the pod gets longer than preStop + gunicorn's graceful timeout.
    assert pod["terminationGracePeriodSeconds"] >= 25


def assert_runtime_dir_has_its_own_volume(mounts: dict[str, str], volumes: dict[str, dict],
                                          runtime_dir: str) -> None:
    assert runtime_dir in mounts, f"RUNTIME_DIR {runtime_dir} is not a mount of its own"
    assert mounts[runtime_dir] != mounts.get("/tmp")
    volume = volumes[mounts[runtime_dir]]["emptyDir"]
    assert volume.get("sizeLimit")


def test_configmap_feeds_the_deployment_with_known_settings() -> None:
    config = by_kind("ConfigMap")
    (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    refs = [source["configMapRef"]["name"] for source in container["envFrom"]]
    assert config["metadata"]["name"] in refs
    unknown = set(config["data"]) - SETTINGS_ENV
    assert not unknown, f"not settings of service/config.py: {unknown}"
    assert all(isinstance(value, str) for value in config["data"].values())
    assert config["data"]["RUNTIME_DIR"].startswith("/tmp/")  # on the emptyDir
    assert int(config["data"]["PORT"]) == 8000


def test_service_hpa_pdb_point_at_the_deployment() -> None:
    deployment = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service = by_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 8000)

    hpa = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2  # so the PDB can let one pod go

    pdb = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


# --- KServe (a CRD: no schema in kubernetes-validate) ----------------------------------------------

# InferenceService predictor fields that are KServe's own; the rest of the predictor is a PodSpec.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "containerConcurrency",
    "timeout", "canaryTrafficPercent", "logger", "batcher", "protocolVersion", "labels", "annotations",
    "deploymentStrategy", "autoScaling", "workerSpec", "model",
}


def test_kserve_inference_service() -> None:
    (isvc,) = documents(KSERVE)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"])
    predictor = isvc["spec"]["predictor"]
    assert predictor["protocolVersion"] == "v2"
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"].split(":")[0].endswith("mnist-serving")
    assert [p["containerPort"] for p in container["ports"]] == [8000]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {e["name"] for e in container.get("env", [])} <= SETTINGS_ENV
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert_runtime_dir_has_its_own_volume({m["mountPath"]: m["name"] for m in container["volumeMounts"]},
                                          {v["name"]: v for v in predictor["volumes"]}, env["RUNTIME_DIR"])

    # The PodSpec part must be a valid PodSpec: validate it as a Pod with the Kubernetes schema.
    pod_spec = {key: value for key, value in predictor.items() if key not in KSERVE_PREDICTOR_FIELDS}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
    try:
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"predictor PodSpec: {exc.message} at {'.'.join(map(str, exc.path))}")


# --- compose and Prometheus -------------------------------------------------------------------------


def test_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    app = services["mnist-serving"]
    assert app["build"]["context"] == "."
    assert any(str(port).endswith("8000") for port in app["ports"])
    assert set(app["environment"]) <= SETTINGS_ENV
    assert app["read_only"] is True and any(t.startswith("/tmp") for t in app["tmpfs"])
    # RUNTIME_DIR (the image's default) on a tmpfs of its own, which temporary files cannot fill.
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime_dir = re.search(r"RUNTIME_DIR=(\S+)", dockerfile[dockerfile.index("AS runtime"):]).group(1)
    assert any(t.split(":")[0] == runtime_dir for t in app["tmpfs"])
    assert "/v2/health/ready" in " ".join(app["healthcheck"]["test"])

    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mounted = [v.split(":")[0] for v in prometheus["volumes"]]
    assert "./deploy/prometheus.yml" in mounted
    assert "profiles" not in app  # the service itself always runs


def test_prometheus_scrapes_the_service() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["mnist-serving:8000"]


# --- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS builder", text, re.M)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, re.M)
    assert stages[-1] == "runtime" and "train" in stages  # runtime is the default target
    runtime = text[text.index("AS runtime"):]
    assert "EXPOSE 8000" in runtime
    assert "HEALTHCHECK" in runtime and "/v2/health/ready" in runtime
    assert re.search(r'^CMD \["gunicorn", "-c", "service/gunicorn.conf.py"\]', runtime, re.M)
    assert "RUNTIME_DIR=/tmp/" in runtime  # writable with --read-only --tmpfs /tmp
    assert "org.opencontainers.image.source" in runtime
    assert dockerfile_uid() != 0
    assert "ARG ORT_PACKAGE=onnxruntime" in text


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "tests", ".pytest_cache"} <= ignored
    assert "models" not in ignored  # the committed models are baked into the image


def _requirements_module():
    spec = importlib.util.spec_from_file_location("deploy_requirements", ROOT / "deploy" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_requirements_serving_only_and_gpu_swap() -> None:
    requirements = _requirements_module().requirements
    serve = requirements("serve")
    names = {re.split(r"[<>=;\[ ]", r)[0].lower() for r in serve}
    assert "onnxruntime" in names and "gunicorn" in names
    assert not names & {"tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "pytest"}

    gpu = requirements("serve", "onnxruntime-gpu", "[cuda,cudnn]", "1.31.1")
    assert "onnxruntime-gpu[cuda,cudnn]==1.31.1" in gpu
    assert not any(r.startswith("onnxruntime>") or r == "onnxruntime" for r in gpu)
    assert any(r.startswith("tensorflow") for r in requirements("train"))
