"""Shared fixtures: MindSpore's golden vectors and the hypothesis profiles."""

from __future__ import annotations

import ast
import json
import os
import pathlib

import numpy as np
import pytest


def golden_dir() -> pathlib.Path:
    """Where the golden vectors are: ``$JCB_GOLDEN_DIR``, else ``shared/golden`` inside the checkout (the device
    machine's copy, see docs/gpu.md), else ``../shared/golden`` beside it (a developer's checkout)."""
    if os.environ.get("JCB_GOLDEN_DIR"):
        return pathlib.Path(os.environ["JCB_GOLDEN_DIR"]).resolve()
    root = pathlib.Path(__file__).resolve().parents[1]
    inside = root / "shared" / "golden"
    return inside if inside.is_dir() else root.parent / "shared" / "golden"


GOLDEN_DIR = golden_dir()
GOLDEN_NPZ = GOLDEN_DIR / "conv2d_backprop_input.npz"


def golden_available() -> bool:
    return GOLDEN_NPZ.exists()


_SKIP_REASON = f"MindSpore golden vectors not found at {GOLDEN_DIR} (set JCB_GOLDEN_DIR, or put shared/golden inside or beside the checkout)"


class Golden:
    """Lazy view of the golden npz: cases, arrays and error probes."""

    def __init__(self, path: pathlib.Path):
        self._z = np.load(path)
        self.meta = json.loads(str(self._z["meta_json"]))
        self.cases = self.meta["cases"]
        self.probes = json.loads(str(self._z["errors_json"]))

    def array(self, case: dict, key: str) -> np.ndarray:
        return self._z[f"{case['name']}_{key}"]

    @staticmethod
    def ctor_kwargs(case_or_probe: dict) -> dict:
        return {k: ast.literal_eval(v) for k, v in case_or_probe["ctor_kwargs_repr"].items()}

    @staticmethod
    def input_size(case: dict):
        kind, value = case["input_size_kind"], case["input_size"]
        if kind == "tuple":
            return tuple(value)
        if kind == "list":
            return list(value)
        return np.asarray(value, np.int64)  # "tensor_int64"

    @staticmethod
    def tolerance(case: dict) -> dict:
        return dict(rtol=1e-5, atol=5e-5) if case["dtype"] == "float32" else dict(rtol=1e-2, atol=1e-2)


_GOLDEN = Golden(GOLDEN_NPZ) if golden_available() else None


def golden_cases(predicate=lambda case: True):
    """Parametrisation helper: golden cases (or one skipped param when the data is absent)."""
    if _GOLDEN is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=_SKIP_REASON), id="no-golden")]
    return [pytest.param(c, id=f"{c['name']}-{'-'.join(c['tags'][:2])}") for c in _GOLDEN.cases if predicate(c)]


def golden_probes(predicate=lambda probe: True):
    if _GOLDEN is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=_SKIP_REASON), id="no-golden")]
    return [pytest.param(p, id=f"{p['id']}-{p['category']}") for p in _GOLDEN.probes if predicate(p)]


@pytest.fixture(scope="session")
def golden() -> Golden:
    if _GOLDEN is None:
        pytest.skip(_SKIP_REASON)
    return _GOLDEN


try:  # hypothesis profiles: "ci" (bounded, deterministic) is the default; "dev" for long local runs.
    from hypothesis import HealthCheck, settings

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
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass
