"""Model lifecycle metrics: the registry's load, refusal and unload events, counted and gauged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .definitions import MODEL_LOADED, MODEL_LOADS, MODEL_REFUSALS, MODEL_UNLOADS, refusal_category

if TYPE_CHECKING:
    from ..registry import RegistryEvents
    from ..runtime import LoadedModel


def model_loaded(model: LoadedModel) -> None:
    MODEL_LOADS.labels(model.name).inc()
    MODEL_LOADED.labels(model.name, str(model.version)).set(1)


def model_refused(name: str, version: int, reason: str) -> None:
    MODEL_REFUSALS.labels(name, refusal_category(reason)).inc()


def model_unloaded(name: str, version: int) -> None:
    # In multiprocess mode a series cannot be removed from the mmap file; 0 says "not served".
    MODEL_UNLOADS.labels(name).inc()
    MODEL_LOADED.labels(name, str(version)).set(0)


def connect(events: RegistryEvents) -> None:
    """Plug the metrics into a registry's lifecycle hooks."""
    events.loaded = model_loaded
    events.refused = model_refused
    events.unloaded = model_unloaded
