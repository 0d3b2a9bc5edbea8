"""Shared fixtures: one real gunicorn on the committed models, and the real MNIST test set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import MODELS, GunicornServer, mnist_test_set


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """The service as the README starts it, on the committed models, with 2 workers."""
    log = tmp_path_factory.mktemp("server") / "gunicorn.log"
    with GunicornServer(MODELS, env={"ADMIN_TOKEN": "test-admin-token"}, log_path=log) as srv:
        yield srv


@pytest.fixture(scope="session")
def mnist_test():
    """(images uint8 [10000,28,28], labels uint8 [10000])."""
    return mnist_test_set()
