"""Render deploy/k8s for ``podman kube play``: what a cluster would run, for one pod on this machine.

    python deploy/render.py --image localhost/mnist-serving:ci --host-port 18000 \\
        --secret ADMIN_TOKEN=test-token > /tmp/mnist-play.yaml
    podman kube play --network slirp4netns /tmp/mnist-play.yaml      # ... podman kube down the same file

Why a renderer rather than a second copy of the manifests: CI must run the very pod spec that
``kubectl apply -k deploy/k8s`` deploys, so this reads the kustomization's ``resources`` and changes only
what a single podman host needs:

- keeps the kinds ``podman kube play`` runs (ConfigMap, Secret, PersistentVolumeClaim -- a podman named
  volume --, Deployment) and drops the ones only a cluster has (Service, HorizontalPodAutoscaler,
  PodDisruptionBudget);
- the Deployment gets ``replicas: 1``, and its image is replaced (the kustomization's ``images`` entry
  names the image the cluster would pull; here it is the one just built);
- the ``http`` port gets a ``hostPort`` on 127.0.0.1 (slirp4netns publishes only host ports);
- ``--secret KEY=VALUE`` fills a key of the Secrets the Deployment reads (a test token instead of the
  committed empty one), written as base64 ``data`` as the API server would store it;
- ``--suffix`` makes the Deployment, Secret and PersistentVolumeClaim names unique, and rewrites every
  reference to them, because podman's pod, secret and volume names are global on the host (parallel CI
  runs must not collide, nor share a feedback store).

Everything else -- volumes of any kind, probes, security context, env, grace period -- passes through
unchanged. Needs PyYAML only.
"""

from __future__ import annotations

import argparse
import base64
import copy
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parent / "k8s"
# What podman kube play runs (a claim becomes a named volume); the rest needs a cluster.
PLAYABLE = ("ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment")


def kustomization_documents(folder: Path = K8S) -> list[dict]:
    """Every document of the kustomization's resources, in the order it lists them."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((folder / resource).read_text()) if doc]
    return documents


def kustomization_image_names(folder: Path = K8S) -> set[str]:
    """The image names the kustomization's ``images`` rewrites (those are the ones we replace)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return {entry["name"] for entry in kustomization.get("images", [])}


def _image_name(image: str) -> str:
    """``registry/name:tag`` -> ``registry/name`` (a port in the registry is not a tag)."""
    last = image.rsplit("/", 1)[-1]
    return image[: len(image) - len(last)] + last.split("@")[0].split(":")[0]


def _pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def _containers(deployment: dict) -> Iterator[dict]:
    pod = _pod_spec(deployment)
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def _rename_secret_refs(deployment: dict, renames: dict[str, str]) -> None:
    """Point every reference to a renamed Secret (env, envFrom, volumes) at its new name."""
    for container in _containers(deployment):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] in renames:
                ref["name"] = renames[ref["name"]]
        for source in container.get("envFrom", []):
            ref = source.get("secretRef")
            if ref and ref["name"] in renames:
                ref["name"] = renames[ref["name"]]
    for volume in _pod_spec(deployment).get("volumes", []):
        secret = volume.get("secret")
        if secret and secret.get("secretName") in renames:
            secret["secretName"] = renames[secret["secretName"]]


def _rename_claim_refs(deployment: dict, renames: dict[str, str]) -> None:
    """Point every volume of a renamed PersistentVolumeClaim at its new name."""
    for volume in _pod_spec(deployment).get("volumes", []):
        claim = volume.get("persistentVolumeClaim")
        if claim and claim.get("claimName") in renames:
            claim["claimName"] = renames[claim["claimName"]]


def _fill_secret(secret: dict, values: dict[str, str]) -> None:
    """Merge ``stringData`` and the given values into base64 ``data`` (what the API server stores)."""
    data = dict(secret.pop("data", None) or {})
    plain = {**(secret.pop("stringData", None) or {}), **values}
    for key, value in plain.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    secret["data"] = data


def render(
    image: str,
    *,
    host_port: int,
    secrets: dict[str, str] | None = None,
    suffix: str = "",
    folder: Path = K8S,
) -> list[dict]:
    """The documents to play: ConfigMaps, Secrets, claims and the one-replica Deployment running ``image``."""
    replaced = kustomization_image_names(folder)
    documents = [copy.deepcopy(doc) for doc in kustomization_documents(folder) if doc["kind"] in PLAYABLE]
    deployments = [doc for doc in documents if doc["kind"] == "Deployment"]
    if len(deployments) != 1:
        raise ValueError(f"expected one Deployment in {folder}, found {len(deployments)}")
    (deployment,) = deployments

    renames: dict[str, str] = {}
    for doc in documents:
        if doc["kind"] == "Secret":
            if suffix:
                renames[doc["metadata"]["name"]] = doc["metadata"]["name"] + suffix
                doc["metadata"]["name"] += suffix
            wanted = {key: value for key, value in (secrets or {}).items()
                      if key in (doc.get("stringData") or {}) or key in (doc.get("data") or {})}
            _fill_secret(doc, wanted)
    unknown = set(secrets or {}) - {key for doc in documents if doc["kind"] == "Secret" for key in doc["data"]}
    if unknown:
        raise ValueError(f"no Secret in {folder} has the keys {sorted(unknown)}")

    claims: dict[str, str] = {}
    for doc in documents:
        if doc["kind"] == "PersistentVolumeClaim" and suffix:
            claims[doc["metadata"]["name"]] = doc["metadata"]["name"] + suffix
            doc["metadata"]["name"] += suffix

    deployment["metadata"]["name"] += suffix
    deployment["spec"]["replicas"] = 1
    _rename_secret_refs(deployment, renames)
    _rename_claim_refs(deployment, claims)
    for container in _containers(deployment):
        if _image_name(container["image"]) in replaced:
            container["image"] = image
        for port in container.get("ports", []):
            if port.get("name") == "http":
                port["hostPort"] = host_port
                port["hostIP"] = "127.0.0.1"
    return documents


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True, help="the image to run (the one just built)")
    parser.add_argument("--host-port", type=int, default=8000, help="loopback port for the http port")
    parser.add_argument("--secret", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="a value for a key of the Deployment's Secrets (repeatable)")
    parser.add_argument("--suffix", default="", help="appended to the Deployment, Secret and claim names")
    args = parser.parse_args(argv)
    documents = render(args.image, host_port=args.host_port, secrets=dict(args.secret), suffix=args.suffix)
    yaml.safe_dump_all(documents, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
