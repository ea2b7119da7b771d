"""``python -m jax_conv_bpi`` (``make demo``): runs with the core only and checks its own numbers.

The demo compares both of its layers with ``jax.vjp`` of
``lax.conv_general_dilated`` and exits non-zero on a mismatch; this test runs
it in a child process with the nn extra made unimportable, and checks that
both parts ran. Its timings are printed, never asserted (speed is the
benchmark's business).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

BLOCK_EXTRAS = textwrap.dedent(
    """
    import runpy, sys
    for name in ("flax", "optax", "google.protobuf", "safetensors", "torch", "matplotlib"):
        sys.modules[name] = None  # importing any of them now raises ImportError
    runpy.run_module("jax_conv_bpi", run_name="__main__")
    """
)


def test_demo_runs_with_the_core_only_and_matches_the_reference():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", BLOCK_EXTRAS], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "1. MindSpore docs example" in out and "2. Strided upsampling" in out, out
    assert out.count("speed-up over jax.vjp:") == 2, out
    assert "288.0" in out  # the docs example's interior value
