"""Fixtures and hooks only: MindSpore's golden vectors as a fixture, and the hypothesis profiles.

What the tests share otherwise (the golden loader, converters, references) is
``tests/support``.
"""

from __future__ import annotations

import os

import pytest

from .support import GOLDEN_MISSING, Golden, load_golden


def pytest_configure(config):
    """Hypothesis profiles: "ci" (bounded, deterministic) is the default; "dev" for long local runs."""
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # pragma: no cover - hypothesis is in the test extra
        return
    settings.register_profile(
        "ci",
        max_examples=40,
        deadline=None,
        derandomize=True,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.register_profile("dev", max_examples=1000, deadline=None, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def golden() -> Golden:
    """The 2-D op's golden file (``conv2d_backprop_input.npz``); skips, saying where it looked, when absent."""
    golden = load_golden()
    if golden is None:
        pytest.skip(GOLDEN_MISSING)
    return golden
