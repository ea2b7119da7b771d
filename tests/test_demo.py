"""``python -m jax_conv_bpi`` (``make demo``): runs with the core only and checks its own numbers.

The demo compares both of its layers with ``jax.vjp`` of
``lax.conv_general_dilated`` and exits non-zero on a mismatch; this test runs
it in a child process with the nn extra made unimportable, and checks that
both parts ran, that it said whether the native kernels are on and which CPU
formulation each example took, that it reported the load average, and that it
ended with where to go next. Its timings are printed, never asserted (speed is
the benchmark's business).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi.__main__ import NATIVE_PATHS, load_note

BLOCK_EXTRAS = textwrap.dedent(
    """
    import runpy, sys
    for name in ("flax", "optax", "google.protobuf", "safetensors", "torch", "matplotlib"):
        sys.modules[name] = None  # importing any of them now raises ImportError
    runpy.run_module("jax_conv_bpi", run_name="__main__")
    """
)


def run_demo(**env_vars: str) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu", **env_vars)
    proc = subprocess.run([sys.executable, "-c", BLOCK_EXTRAS], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_demo_runs_with_the_core_only_and_matches_the_reference():
    out = run_demo()
    assert "1. MindSpore docs example" in out and "2. Strided upsampling" in out, out
    assert out.count("speed-up over jax.vjp:") == 2, out
    assert "288.0" in out  # the docs example's interior value
    # Whether the native kernels are on, in native_status()'s words.
    status = jcb.native_status()
    if status.startswith("native kernel: "):
        assert "native CPU kernels: on (" in out, out
    else:
        assert f"native CPU kernels: off ({status.removeprefix('native kernel off: ')})" in out, out
    # Which formulation each example's input gradient took, by cpu_paths' names.
    paths = re.findall(r"CPU formulation of the input gradient: (\w+) \((the native kernels ran|pure XLA)\)", out)
    assert len(paths) == 2, out
    for path, kind in paths:
        assert path in jcb.CPU_PATHS + NATIVE_PATHS, path
        assert (kind == "the native kernels ran") == (path in NATIVE_PATHS), (path, kind)
    assert re.search(r"^Load average (\(1 min\)|unknown)", out, re.MULTILINE), out
    next_steps = out[out.index("\nNext:") :]
    assert "documentation:" in next_steps and "python -m jax_conv_bpi.bench --quick" in next_steps, next_steps


def test_demo_says_when_the_native_kernels_are_off():
    out = run_demo(JCB_NATIVE="0")
    assert "native CPU kernels: off (disabled by JCB_NATIVE=0)" in out, out
    assert out.count("(pure XLA)") == 2, out
    assert "pip install 'jax_conv_bpi[native]'" in out[out.index("\nNext:") :], out


@pytest.mark.parametrize(
    ("start", "end", "cores", "busy"),
    [
        ([0.2, 0.3, 0.3], [0.4, 0.3, 0.3], 2, False),
        ([1.4, 1.0, 1.0], [1.5, 1.0, 1.0], 2, False),  # the benchmark's bound: 0.5 * cores + 0.5
        ([1.6, 1.0, 1.0], [0.9, 1.0, 1.0], 2, True),
        ([0.5, 0.5, 0.5], [3.0, 1.0, 1.0], 4, True),
    ],
)
def test_the_load_note_says_busy_as_the_benchmark_does(start, end, cores, busy):
    note = load_note(start, end, cores)
    assert ("the machine was busy" in note) == busy, note
    assert f"{cores} usable core(s)" in note


def test_the_load_note_without_a_load_average():
    assert "unknown" in load_note(None, None, 2)
