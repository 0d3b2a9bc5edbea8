"""The one construction site: settings -> registry -> admin control -> data plane (+ feedback store),
metrics wired in.

Everything a worker serves with is built here, once, and handed explicitly to whoever needs it: the
Flask app (``create_app(service)``), the raw-image fast lane and gunicorn's post-fork hook. Nothing
else constructs these objects or looks them up behind the caller's back, so reading this file tells
what the service is made of (as MLServer's ``server.py`` does for its handlers).

Models are not loaded when the service is built but by ``Service.start``, in each worker after gunicorn
forks (``gunicorn.conf.py``'s post_worker_init): onnxruntime sessions must not be shared across a fork.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import metrics
from .config import Settings, load_settings
from .control import Control
from .dataplane import DataPlane
from .feedback import FeedbackStore
from .registry import ModelRegistry
from .repository import VersionPolicy


@dataclass
class Service:
    """What one server is made of. ``start`` loads the models and starts polling; it is idempotent."""

    settings: Settings
    registry: ModelRegistry
    control: Control
    plane: DataPlane
    feedback: FeedbackStore | None = None  # users' labelled pictures; None when FEEDBACK_DIR is unset
    _started: bool = field(default=False, init=False)
    _start_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        """Load every model (with warm-up) and start polling the repository. Idempotent."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        self.control.start(self.settings.poll_interval_s)


def build(settings: Settings | None = None) -> Service:
    """Build the service from its settings (the environment when none are given); loads no model."""
    settings = settings or load_settings()
    registry = ModelRegistry(
        repository=settings.model_repository,
        default_policy=VersionPolicy.parse(settings.version_policy),
        providers=settings.providers,
        threads=settings.ort_threads(),
        max_model_bytes=settings.max_model_bytes,
    )
    metrics.connect(registry.events)  # model loads, refusals and unloads -> Prometheus
    # Admin state shared by the workers (RUNTIME_DIR/control.json); reset once per server, here.
    control = Control.for_runtime_dir(registry, settings.runtime_dir)
    control.reset()
    feedback = None
    if settings.feedback_dir:  # off unless configured: nothing is written by default
        feedback = FeedbackStore(Path(settings.feedback_dir), settings.feedback_max_bytes)
    return Service(settings=settings, registry=registry, control=control, plane=DataPlane(settings, registry),
                   feedback=feedback)
