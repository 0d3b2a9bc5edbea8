"""What the status and admin routes report about models: every version's state and why, and Triton's
repository index (as MLServer's ``handlers/model_repository.py`` sits beside its model registry).

Read-only: it looks at the registry's served table and refusals and at the repository on disk, and
changes nothing. The admin API's load and unload are ``service/control.py``.
"""

from __future__ import annotations

from .blocking import run_blocking
from .errors import Unavailable
from .registry import NOT_SELECTED, READY, UNAVAILABLE, UNLOADED, ModelRegistry
from .repository import list_models, list_versions, valid_model_name


def model_status(registry: ModelRegistry, name: str) -> dict:
    """Every version of a model on disk or known to this worker: READY, or UNAVAILABLE with why."""
    served = registry.served().get(name)
    refusals = registry.refusals(name)
    unloaded = name in registry.unloaded
    try:
        # A folder listing can block (a slow or hung volume): beside the event loop, not on it.
        on_disk = set(run_blocking(list_versions, registry.repository, name)) if valid_model_name(name) else set()
    except OSError:
        on_disk = set()
    states = []
    for version in sorted(on_disk | set(refusals) | set(served.versions if served else ())):
        refused = refusals.get(version, "")
        if served and version in served.versions:
            reason = ""
            if refused:  # files changed under a loaded version and were refused
                reason = f"serving the copy loaded earlier; its files now on disk are refused: {refused}"
            states.append({"version": version, "state": READY, "reason": reason})
        elif unloaded:
            states.append({"version": version, "state": UNAVAILABLE, "reason": UNLOADED})
        elif refused:
            states.append({"version": version, "state": UNAVAILABLE, "reason": refused})
        else:
            states.append({"version": version, "state": UNAVAILABLE, "reason": NOT_SELECTED})
    return {"name": name, "versions": states, "unloaded": unloaded}


def repository_index(registry: ModelRegistry, ready: bool = False) -> list[dict]:
    """Triton's repository index: one row per model version (as this worker sees it).

    A model without any published version gets one row with an empty version. ``ready=True`` keeps
    only the versions that answer requests.
    """
    rows = []
    for name in _model_names(registry):
        versions = model_status(registry, name)["versions"]
        if not versions:
            reason = UNLOADED if name in registry.unloaded else "no published versions"
            rows.append({"name": name, "version": "", "state": UNAVAILABLE, "reason": reason})
        for state in versions:
            rows.append({"name": name, "version": str(state["version"]), "state": state["state"],
                         "reason": state["reason"]})
    return [row for row in rows if row["state"] == READY] if ready else rows


def require_served(registry: ModelRegistry, name: str) -> None:
    """Unavailable, with every version's reason, when the model has no version that serves."""
    if name not in registry.served():
        states = model_status(registry, name)["versions"]
        reasons = "; ".join(f"v{s['version']}: {s['reason']}" for s in states) or "no published versions"
        raise Unavailable(f"model '{name}' could not be loaded: {reasons}")


def _model_names(registry: ModelRegistry) -> list[str]:
    try:
        on_disk = set(run_blocking(list_models, registry.repository))
    except OSError:
        on_disk = set()
    return sorted(on_disk | set(registry.served()))
