"""The correctness check: every implementation's result against a reference, before any timing."""

from __future__ import annotations

import jax
import numpy as np

from .config import Config


def rel_error(a, b) -> float:
    """``max |a - b| / max |b|`` over every leaf (0 when both are zero)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    worst = 0.0
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            return float("inf")
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        err = float(np.max(np.abs(x - y))) if y.size else 0.0
        worst = max(worst, err / scale if scale else err)
    return worst


# The correctness check's tolerance off full float32: bfloat16 keeps 8 bits of mantissa (each result is
# rounded to ~2**-8 of the largest), TF32 10 bits in the products.
BFLOAT16_RTOL = 2e-2
TF32_RTOL = 1e-2


def effective_rtol(config: Config) -> float:
    """``config.check_rtol``, widened for bfloat16 or the default (TF32-allowed) precision."""
    rtol = config.check_rtol
    if config.dtype == "bfloat16":
        rtol = max(rtol, BFLOAT16_RTOL)
    if config.precision == "default":
        rtol = max(rtol, TF32_RTOL)
    return rtol


def check_outputs(outputs: dict, reference: str | None, rtol: float) -> dict:
    """Every implementation against ``reference``; ``ok`` is about ``ours``."""
    if reference is None:
        return {"reference": None, "rel_err": {}, "ok": None, "rtol": rtol}
    ref = outputs[reference]
    errs = {name: rel_error(out, ref) for name, out in outputs.items() if name != reference}
    return {
        "reference": reference,
        "rel_err": errs,
        "ok": bool(errs.get("ours", float("inf")) <= rtol),
        "peers_ok": all(e <= rtol for e in errs.values()),
        "rtol": rtol,
    }
