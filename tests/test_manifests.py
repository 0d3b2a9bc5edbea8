"""Deployment files, checked offline: Kubernetes manifests against the API schemas (kubernetes-validate
ships them), the Kubeflow TFJob against the training SDK's models, the KServe InferenceService against
the KServe SDK's models (extracted from its wheel: the package cannot be installed beside our pins),
each with a deliberately broken field refused; what deploy/render.py gives podman kube play;
compose.yaml and deploy/prometheus.yml, and the Dockerfile's contract (what the manifests rely on: port,
UID, health routes, env-only configuration).
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import re
import shlex
from dataclasses import fields
from pathlib import Path

import kubeflow.training.models as kubeflow_models
import kubernetes.client.models as k8s_models
import kubernetes_validate
import pytest
import yaml
from kubeflow.training.constants import constants as kubeflow_constants

from service.config import Settings
from training.cli import build_parser
from training.distribute import is_chief

from .openapi_models import Models, SchemaError, check

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
KSERVE_GRPC = ROOT / "deploy" / "kserve" / "inferenceservice-grpc.yaml"
KSERVE_FEEDBACK = ROOT / "deploy" / "kserve" / "feedback-pvc.yaml"
GRPC_PORT = 8081
TFJOB = ROOT / "deploy" / "kubeflow" / "tfjob.yaml"
KSERVE_MODELS = ROOT / "tests" / "schemas" / "kserve-0.21.0-models.json"  # .ci/extract_sdk_models.py
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
    assert kinds == sorted(["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PersistentVolumeClaim",
                            "PodDisruptionBudget", "Secret", "Service"])
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
    claim = by_kind("PersistentVolumeClaim")
    assert_feedback_dir_on_claim(mounts, volumes, by_kind("ConfigMap")["data"]["FEEDBACK_DIR"], claim)
    # Several replicas (and the HPA) write the one store: the claim must be mountable by all of them.
    assert deployment["spec"]["replicas"] > 1 and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["securityContext"]["fsGroup"] == dockerfile_uid()  # the claim's files writable by the user

    # Graceful stop: the pod gets longer than preStop + gunicorn's graceful timeout.
    assert pod["terminationGracePeriodSeconds"] >= 25


def assert_runtime_dir_has_its_own_volume(mounts: dict[str, str], volumes: dict[str, dict],
                                          runtime_dir: str) -> None:
    assert runtime_dir in mounts, f"RUNTIME_DIR {runtime_dir} is not a mount of its own"
    assert mounts[runtime_dir] != mounts.get("/tmp")
    volume = volumes[mounts[runtime_dir]]["emptyDir"]
    assert volume.get("sizeLimit")


def assert_feedback_dir_on_claim(mounts: dict[str, str], volumes: dict[str, dict], feedback_dir: str,
                                 claim: dict) -> None:
    """FEEDBACK_DIR is a mount of a PersistentVolumeClaim (the root is read-only; an emptyDir dies with the
    pod), the one given, large enough for the default FEEDBACK_MAX_BYTES."""
    assert feedback_dir in mounts, f"FEEDBACK_DIR {feedback_dir} is not a mount"
    volume = volumes[mounts[feedback_dir]]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    size = claim["spec"]["resources"]["requests"]["storage"]
    assert re.fullmatch(r"\d+Gi", size) and int(size[:-2]) * 2**30 >= Settings().feedback_max_bytes


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
    assert int(config["data"]["GRPC_PORT"]) == GRPC_PORT


def test_grpc_port_is_exposed_and_named() -> None:
    """The Open Inference Protocol over gRPC: the port GRPC_PORT opens is declared everywhere, named grpc."""
    (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"] == GRPC_PORT
    service_ports = {p["name"]: p for p in by_kind("Service")["spec"]["ports"]}
    assert service_ports["grpc"]["targetPort"] == "grpc"
    assert service_ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"

    app = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["mnist-serving"]
    grpc_ports = [p for p in app["ports"] if isinstance(p, dict) and p.get("name") == "grpc"]
    assert [p["target"] for p in grpc_ports] == [GRPC_PORT]
    assert int(app["environment"]["GRPC_PORT"]) == GRPC_PORT

    runtime = (ROOT / "Dockerfile").read_text().split("AS runtime", 1)[1]
    assert re.search(rf"^EXPOSE 8000 {GRPC_PORT}$", runtime, re.M)


@pytest.mark.parametrize("token", ["ADMIN_TOKEN", "FEEDBACK_TOKEN"])
def test_tokens_come_from_the_secret(token: str) -> None:
    """ADMIN_TOKEN and FEEDBACK_TOKEN are read from the Secret (never a literal in the Deployment or the
    ConfigMap), and the committed Secret holds them empty: the admin API stays off, and feedback open (within
    its quota), until an operator sets a token."""
    secret = by_kind("Secret")
    (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container.get("env", [])}
    ref = env[token]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] == token and token in SETTINGS_ENV
    assert secret["stringData"][token] == ""
    assert token not in by_kind("ConfigMap")["data"]
    assert all("value" not in item for item in container.get("env", []))  # settings: ConfigMap or Secret


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


# --- what podman kube play gets (deploy/render.py; CI plays it: .ci/kube_play_test.py) ---------------


def _render_module():
    spec = importlib.util.spec_from_file_location("deploy_render", ROOT / "deploy" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_for_podman_kube_play() -> None:
    render = _render_module().render
    played = render("localhost/mnist-serving:ci", host_port=18000, secrets={"ADMIN_TOKEN": "t0ken"},
                    suffix="-ci1")
    kinds = {doc["kind"]: doc for doc in played}
    # Service, HPA, PDB need a cluster; a claim is a podman named volume.
    assert sorted(kinds) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Secret"]
    deployment, secret = kinds["Deployment"], kinds["Secret"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["metadata"]["name"] == by_kind("Deployment")["metadata"]["name"] + "-ci1"
    pod, original = deployment["spec"]["template"]["spec"], by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "localhost/mnist-serving:ci"
    http = next(port for port in container["ports"] if port["name"] == "http")
    assert (http["hostPort"], http["hostIP"]) == (18000, "127.0.0.1")
    assert base64.b64decode(secret["data"]["ADMIN_TOKEN"]) == b"t0ken"
    ref = next(e for e in container["env"] if e["name"] == "ADMIN_TOKEN")["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] == "mnist-serving-admin-ci1"
    # The claim (a podman volume, global on the host) is renamed like the Secret, and so is its reference.
    claim = kinds["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == by_kind("PersistentVolumeClaim")["metadata"]["name"] + "-ci1"
    claimed = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert [v["persistentVolumeClaim"]["claimName"] for v in claimed] == [claim["metadata"]["name"]]
    # Everything else passes through: volumes of whatever kind, probes, security, grace period.
    unclaimed = [v for v in original["volumes"] if "persistentVolumeClaim" not in v]
    assert [v for v in pod["volumes"] if "persistentVolumeClaim" not in v] == unclaimed
    assert [v["name"] for v in pod["volumes"]] == [v["name"] for v in original["volumes"]]
    for key in ("securityContext", "terminationGracePeriodSeconds"):
        assert pod[key] == original[key]
    assert container["volumeMounts"] == original["containers"][0]["volumeMounts"]
    assert container["startupProbe"] == original["containers"][0]["startupProbe"]
    with pytest.raises(ValueError, match="NOT_A_KEY"):
        render("x", host_port=1, secrets={"NOT_A_KEY": "v"})


# --- schemas of the custom resources: the SDKs' models ------------------------------------------------
# The CRDs' own OpenAPI schemas ship in no PyPI package; the SDKs generated from them do. KServe's
# package conflicts with our pins (python-dateutil, protobuf), so its model tables were extracted from
# the kserve 0.21.0 wheel (.ci/extract_sdk_models.py); Kubernetes types come from the kubernetes client.

TFJOB_MODELS = Models([kubeflow_models, k8s_models])
KSERVE_TABLES = json.loads(KSERVE_MODELS.read_text())["models"]
KSERVE_SDK = Models([k8s_models], KSERVE_TABLES)


def tfjob() -> dict:
    (job,) = [doc for doc in documents(TFJOB) if doc["kind"] == "TFJob"]
    return job


def _validate_pod_template(template: dict, name: str) -> None:
    resource = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
    try:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_tfjob_valid_against_the_training_sdk_models() -> None:
    job = check(tfjob(), kubeflow_constants.TFJOB_MODEL, TFJOB_MODELS)
    assert isinstance(job, kubeflow_models.KubeflowOrgV1TFJob)
    assert (job.api_version, job.kind) == (f"{kubeflow_constants.GROUP}/{kubeflow_constants.VERSION}",
                                           kubeflow_constants.TFJOB_KIND)
    specs = job.spec.tf_replica_specs
    assert set(specs) == {kubeflow_constants.REPLICA_TYPE_CHIEF, kubeflow_constants.REPLICA_TYPE_WORKER}
    assert specs["Chief"].replicas == 1 and specs["Worker"].replicas >= 1
    for replica_type, spec in tfjob()["spec"]["tfReplicaSpecs"].items():
        _validate_pod_template(spec["template"], f"tfjob-{replica_type.lower()}")
    (pvc,) = [doc for doc in documents(TFJOB) if doc["kind"] == "PersistentVolumeClaim"]
    kubernetes_validate.validate(pvc, K8S_VERSION, strict=True)


BROKEN_TFJOB = {
    "replica instead of replicas": (lambda job: job["spec"]["tfReplicaSpecs"]["Worker"].__setitem__(
        "replica", job["spec"]["tfReplicaSpecs"]["Worker"].pop("replicas")), "unknown field"),
    "replicas as text": (lambda job: job["spec"]["tfReplicaSpecs"]["Worker"].__setitem__("replicas", "two"),
                         "expected int"),
    "container without a name": (lambda job: job["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]
                                  ["containers"][0].pop("name"), "`name`, must not be `None`"),
    "runPolicy misspelt": (lambda job: job["spec"].__setitem__("runPolicies", job["spec"].pop("runPolicy")),
                           "unknown field"),
}


@pytest.mark.parametrize("name", list(BROKEN_TFJOB))
def test_tfjob_broken_field_refused(name: str) -> None:
    job = copy.deepcopy(tfjob())
    breaks, message = BROKEN_TFJOB[name]
    breaks(job)
    with pytest.raises(SchemaError, match=re.escape(message)) as refused:
        check(job, kubeflow_constants.TFJOB_MODEL, TFJOB_MODELS)
    print(f"TFJob {name}: refused: {refused.value}")


def test_tfjob_runs_the_training_cli_multi_worker_and_only_the_chief_publishes() -> None:
    specs = tfjob()["spec"]["tfReplicaSpecs"]
    commands = {}
    for replica_type, spec in specs.items():
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        # The operator injects TF_CONFIG into, and opens the port on, the container named "tensorflow".
        assert container["name"] == kubeflow_constants.TFJOB_CONTAINER
        assert any(port["name"] == "tfjob-port" for port in container["ports"])
        command = container["command"]
        assert command[:3] == ["python", "-m", "training"], command
        args = build_parser().parse_args(command[3:])  # the real CLI accepts it
        assert args.command == "train" and args.distribute == "multi-worker"
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        shared = next(m for m in container["volumeMounts"] if "persistentVolumeClaim" in volumes[m["name"]])
        for folder in (args.data, args.repository):  # data and repository on the shared volume
            assert Path(folder).is_relative_to(shared["mountPath"]), (replica_type, folder)
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # the root filesystem is read-only
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
        assert spec["restartPolicy"] == "ExitCode"  # exit 1 (refused) and 2 (bad data) are final
        commands[replica_type] = (command, shared.get("readOnly", False))
    # Same options on every replica (MultiWorkerMirroredStrategy); only the Chief can write the repository.
    assert commands["Chief"][0] == commands["Worker"][0], shlex.join(commands["Worker"][0])
    assert commands["Chief"][1] is False and commands["Worker"][1] is True
    assert "--min-accuracy" in commands["Chief"][0]  # the publishing gate

    # The TF_CONFIG the operator writes (cluster with a chief): the chief publishes, worker 0 does not.
    cluster = {"chief": ["mnist-train-chief-0:2222"],
               "worker": [f"mnist-train-worker-{i}:2222" for i in range(specs["Worker"]["replicas"])]}
    for task, publishes in ((("chief", 0), True), (("worker", 0), False), (("worker", 1), False)):
        config = json.dumps({"cluster": cluster, "task": {"type": task[0], "index": task[1]}})
        with pytest.MonkeyPatch.context() as env:
            env.setenv("TF_CONFIG", config)
            assert is_chief() is publishes, task


def test_train_target_exists_for_the_tfjob_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    train = text[text.index("AS train"):text.index("AS runtime")]
    assert "COPY training/ training/" in train and "requirements-train.txt" in train
    assert re.search(r"^USER 10001", train, re.M)


# --- KServe InferenceService ------------------------------------------------------------------------


def test_kserve_inference_service_valid_against_the_kserve_sdk_models() -> None:
    (isvc,) = documents(KSERVE)
    checked = check(isvc, "V1beta1InferenceService", KSERVE_SDK)
    assert checked["api_version"] == "serving.kserve.io/v1beta1" and checked["kind"] == "InferenceService"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"])

    # The PodSpec part of the predictor (fields PredictorSpec shares with V1PodSpec) must also be a valid
    # PodSpec by the Kubernetes schema, which knows more than the generated classes (e.g. enums).
    predictor = isvc["spec"]["predictor"]
    pod_keys = set(k8s_models.V1PodSpec.attribute_map.values())
    own_keys = set(KSERVE_TABLES["V1beta1PredictorSpec"]["attribute_map"].values()) - pod_keys
    pod_spec = {key: value for key, value in predictor.items() if key in pod_keys}
    assert set(predictor) - set(pod_spec) <= own_keys
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
    try:
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"predictor PodSpec: {exc.message} at {'.'.join(map(str, exc.path))}")

    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"].split(":")[0].endswith("mnist-serving")
    assert [p["containerPort"] for p in container["ports"]] == [8000]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {e["name"] for e in container.get("env", [])} <= SETTINGS_ENV
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert_runtime_dir_has_its_own_volume(mounts, volumes, env["RUNTIME_DIR"])
    (claim,) = documents(KSERVE_FEEDBACK)
    assert_feedback_dir_on_claim(mounts, volumes, env["FEEDBACK_DIR"], claim)
    assert predictor["maxReplicas"] > 1 and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert predictor["securityContext"]["fsGroup"] == dockerfile_uid()


def test_kserve_feedback_claim_valid_against_schema() -> None:
    (claim,) = documents(KSERVE_FEEDBACK)
    try:
        kubernetes_validate.validate(claim, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{KSERVE_FEEDBACK.name}: {exc.message} at {'.'.join(map(str, exc.path))}")


BROKEN_ISVC = {
    # KServe has protocolVersion on predictor.model, not on a custom container's predictor.
    "protocolVersion on the predictor": (lambda isvc: isvc["spec"]["predictor"].__setitem__(
        "protocolVersion", "v2"), "unknown field of V1beta1PredictorSpec"),
    "minReplica instead of minReplicas": (lambda isvc: isvc["spec"]["predictor"].__setitem__(
        "minReplica", isvc["spec"]["predictor"].pop("minReplicas")), "unknown field"),
    "maxReplicas as text": (lambda isvc: isvc["spec"]["predictor"].__setitem__("maxReplicas", "5"),
                            "expected int"),
    "containerPort as text": (lambda isvc: isvc["spec"]["predictor"]["containers"][0]["ports"][0].__setitem__(
        "containerPort", "8000"), "expected int"),
}


@pytest.mark.parametrize("name", list(BROKEN_ISVC))
def test_kserve_broken_field_refused(name: str) -> None:
    (isvc,) = documents(KSERVE)
    isvc = copy.deepcopy(isvc)
    breaks, message = BROKEN_ISVC[name]
    breaks(isvc)
    with pytest.raises(SchemaError, match=re.escape(message)) as refused:
        check(isvc, "V1beta1InferenceService", KSERVE_SDK)
    print(f"InferenceService {name}: refused: {refused.value}")


def test_kserve_model_tables_come_from_the_sdk() -> None:
    """The extract is what .ci/extract_sdk_models.py wrote from the kserve wheel, not a hand-made list."""
    extract = json.loads(KSERVE_MODELS.read_text())
    assert extract["source"] == "kserve-0.21.0-py3-none-any.whl" and extract["root"] == "V1beta1InferenceService"
    predictor = extract["models"]["V1beta1PredictorSpec"]
    assert predictor["attribute_map"]["min_replicas"] == "minReplicas"
    assert predictor["openapi_types"]["containers"] == "list[V1Container]"


def test_kserve_grpc_inference_service() -> None:
    """Knative routes one port per predictor: gRPC is its own InferenceService, its port named h2c."""
    (isvc,) = documents(KSERVE_GRPC)
    check(isvc, "V1beta1InferenceService", KSERVE_SDK)
    (http_isvc,) = documents(KSERVE)
    assert isvc["metadata"]["name"] != http_isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]
    pod_keys = set(k8s_models.V1PodSpec.attribute_map.values())
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"},
           "spec": {key: value for key, value in predictor.items() if key in pod_keys}}
    try:
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"gRPC predictor PodSpec: {exc.message} at {'.'.join(map(str, exc.path))}")
    (container,) = predictor["containers"]
    assert container["image"] == http_isvc["spec"]["predictor"]["containers"][0]["image"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("h2c", GRPC_PORT)]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= SETTINGS_ENV and int(env["GRPC_PORT"]) == GRPC_PORT
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] == GRPC_PORT


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
    # FEEDBACK_DIR on a named volume (it outlives the container), declared at the top level, mounted on
    # the folder the image creates for the service's user (a fresh volume takes that folder's owner).
    feedback_dir = app["environment"]["FEEDBACK_DIR"]
    named = {v.split(":")[1]: v.split(":")[0] for v in app["volumes"] if not v.startswith((".", "/"))}
    assert named.get(feedback_dir) in compose.get("volumes", {}), f"FEEDBACK_DIR {feedback_dir}: no named volume"
    uid = dockerfile_uid()
    assert re.search(rf"mkdir -p {re.escape(feedback_dir)} && chown {uid}:{uid} {re.escape(feedback_dir)}",
                     dockerfile[dockerfile.index("AS runtime"):])
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
