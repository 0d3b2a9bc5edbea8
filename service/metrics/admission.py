"""Admission metrics: requests a worker's budgets refused before the app saw them, by reason.

Those never reach the app's request hooks, so without this counter a worker answering 503 to every
third client under a crowd, or 408 to stalled uploads, would look idle on /metrics.
"""

from __future__ import annotations

from .definitions import ADMISSION_REFUSALS

ADMISSION_REASONS = ("requests_in_progress", "body_bytes", "body_timeout", "body_budget", "body_incomplete")


def admission_refused(reason: str) -> None:
    ADMISSION_REFUSALS.labels(reason if reason in ADMISSION_REASONS else "other").inc()
