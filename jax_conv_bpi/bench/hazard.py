"""The XLA CPU hazard of the plain-JAX baseline: strided + dilated shapes run it in a child process first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np

from . import impls
from .machine import source_root
from .suite import AnyShape, shape_from_dict


def baseline_may_abort(shape: AnyShape, device) -> bool:
    """Strided + dilated shapes whose lax-autodiff input gradient may abort XLA CPU."""
    return device.platform == "cpu" and max(shape.stride) > 1 and max(shape.dilation) > 1


_PROBES: dict[AnyShape, tuple[bool, str]] = {}


def probe_baseline(shape: AnyShape, timeout: float = 300) -> tuple[bool, str]:
    """Run the plain-JAX baselines of ``shape`` in a child process; ``(survived, detail)``.

    Cached per shape for the life of the process.
    """
    if shape not in _PROBES:
        _PROBES[shape] = run_probe_process(shape.to_dict(), timeout)
    return _PROBES[shape]


def run_probe_process(shape_dict: dict, timeout: float) -> tuple[bool, str]:
    """``python -m jax_conv_bpi.bench --probe-shape JSON`` in a child; ``(exit 0, detail)``."""
    cmd = [sys.executable, "-m", "jax_conv_bpi.bench", "--probe-shape", json.dumps(shape_dict)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    root = str(source_root())
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return False, f"probe timed out after {timeout:.0f} s"
    if proc.returncode == 0:
        return True, "probe passed"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return False, f"skipped: the plain-JAX baseline killed a probe process ({name}, the XLA CPU hazard)"
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    return False, f"probe exited with status {proc.returncode}: {tail[0][:200]}"


def run_probe(shape_json: str) -> int:
    """The child's side (``--probe-shape``): both plain-JAX baselines of the shape, once; 0 when they ran."""
    shape = shape_from_dict(json.loads(shape_json))
    dout, w = shape.arrays(0)
    jax.block_until_ready(jax.jit(impls.jax_vjp_fn(shape))(dout, w))
    x = np.zeros(shape.x_shape, np.float32)
    jax.block_until_ready(jax.jit(impls.train_fn(shape, "jax_grad"))(x, w, dout))
    return 0
