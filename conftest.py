"""Test sessions compile for compile speed: XLA CPU options that leave every result unchanged.

Compilation dominates this suite (thousands of small programs, each run once),
and XLA CPU spends most of it in LLVM's optimisation passes and in its MLIR
fusion emitters. Before JAX starts a backend, ``XLA_FLAGS`` gets:

- ``--xla_backend_optimization_level=0`` and
  ``--xla_llvm_disable_expensive_passes=true``: LLVM optimises less. XLA CPU
  does not enable fast-math, so no level reorders floating-point sums; results
  agree to the last bit or two (multiply-add contraction), far inside the
  tests' tolerances, and the loops run slower.
- ``--xla_cpu_parallel_codegen_split_count=1``: one code-generation thread (the
  two pytest-xdist workers already use both cores).
- ``--xla_cpu_use_fusion_emitters=false`` (jaxlib 0.10 and later, where it is
  tested; an unknown flag aborts older XLAs): the classic loop emitters, several
  times faster to compile.

The HLO passes, where the library's formulations are rewritten and where XLA
CPU's known crashes happen, run as always. The tests whose point is XLA's
default behaviour (the SIGABRT/SIGSEGV probes) run their children with the
flags as they were (``helpers.default_xla_env``), and ``make test-xla-defaults``
(run by CI) runs every CPU path on the reference geometries, 1-D to 3-D, and
the MindSpore DCGAN network with XLA's defaults. Set
``JCB_TEST_XLA_DEFAULTS=1`` to run any test selection with XLA's defaults.
Flags already in ``XLA_FLAGS`` come last, so they win.
"""

from __future__ import annotations

import importlib.metadata
import os

OUTSIDE = "JCB_XLA_FLAGS_OUTSIDE_TESTS"  # the flags as they were, for children that want XLA's defaults


def _fast_compile_flags() -> list[str]:
    flags = [
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
        "--xla_cpu_parallel_codegen_split_count=1",
    ]
    try:
        major, minor = (int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return flags
    if (major, minor) >= (0, 10):
        flags.append("--xla_cpu_use_fusion_emitters=false")
    return flags


if OUTSIDE not in os.environ and os.environ.get("JCB_TEST_XLA_DEFAULTS") != "1":
    # pytest-xdist's workers inherit this environment, so they see OUTSIDE set and keep the flags.
    os.environ[OUTSIDE] = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = " ".join([*_fast_compile_flags(), os.environ[OUTSIDE]]).strip()
