"""Feedback metrics: pictures stored, already there, filed under a second label, and refusals."""

from __future__ import annotations

from .definitions import FEEDBACK, FEEDBACK_CONFLICTS, FEEDBACK_DUPLICATES, FEEDBACK_REFUSALS


def feedback_stored(model: str, label: str, *, created: bool, conflict: bool) -> None:
    if created:
        FEEDBACK.labels(model, label).inc()
    else:
        FEEDBACK_DUPLICATES.labels(model).inc()
    if conflict:
        FEEDBACK_CONFLICTS.labels(model).inc()


def feedback_refused(reason: str) -> None:
    FEEDBACK_REFUSALS.labels(reason).inc()
