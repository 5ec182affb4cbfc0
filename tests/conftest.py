"""Shared fixtures (helpers they use live in tests/helpers.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from the test server

from tests.helpers import tiny_params


@pytest.fixture
def tiny():
    return tiny_params


@pytest.fixture(scope="session")
def prefect_harness():
    """A real temporary Prefect server and database for the whole session (started once, about 20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_restored():
    """A test that starts an MLflow run in this process sets mlflow's global tracking URI (`mim.tracking.connect`);
    the next test's client would read that test's store instead of its own MLFLOW_TRACKING_URI."""
    import sys

    yield
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils is not None:
        utils._tracking_uri = None
