"""The test session's fast-compile settings: the one list of XLA CPU options, and who reads it.

Compilation dominates this suite (thousands of small programs, each run once),
and XLA CPU spends most of it in LLVM's optimisation passes and in its MLIR
fusion emitters. ``FAST_COMPILE`` holds the options that leave every result
unchanged and compile faster:

- ``xla_backend_optimization_level=0`` and
  ``xla_llvm_disable_expensive_passes=true``: LLVM optimises less. XLA CPU
  does not enable fast-math, so no level reorders floating-point sums; results
  agree to the last bit or two (multiply-add contraction), far inside the
  tests' tolerances, and the loops run slower.
- ``xla_cpu_parallel_codegen_split_count=1``: one code-generation thread (the
  two pytest-xdist workers already use both cores).
- ``xla_cpu_use_fusion_emitters=false`` (jaxlib 0.10 and later, where it is
  tested; an unknown flag aborts older XLAs): the classic loop emitters, several
  times faster to compile.

Two readers, one list: the repository's ``conftest.py`` puts them in
``XLA_FLAGS`` before JAX starts a backend (it loads this file by its path,
since importing ``tests.support`` imports JAX), and ``tests.support`` passes the
same options to ``compile_and_run``'s compilations. The HLO passes, where the
library's formulations are rewritten and where XLA CPU's known crashes happen,
run as always. The tests whose point is XLA's default behaviour (the
SIGABRT/SIGSEGV probes) run their children with the flags as they were
(``default_xla_env``); ``JCB_TEST_XLA_DEFAULTS=1`` runs any test selection
with XLA's defaults (``make test-xla-defaults``). Flags already in
``XLA_FLAGS`` come last, so they win.

No JAX here, and nothing but the standard library.
"""

from __future__ import annotations

import importlib.metadata
import os

OUTSIDE = "JCB_XLA_FLAGS_OUTSIDE_TESTS"  # the flags as they were, for children that want XLA's defaults
DEFAULTS = "JCB_TEST_XLA_DEFAULTS"  # "1": XLA's default compilation for the whole session

# option: (value, the first jaxlib that knows it, or None for every supported jaxlib)
FAST_COMPILE: dict[str, tuple[bool | int, tuple[int, int] | None]] = {
    "xla_backend_optimization_level": (0, None),
    "xla_llvm_disable_expensive_passes": (True, None),
    "xla_cpu_parallel_codegen_split_count": (1, None),
    "xla_cpu_use_fusion_emitters": (False, (0, 10)),
}


def xla_defaults_requested() -> bool:
    """Whether this session compiles with XLA's defaults (``JCB_TEST_XLA_DEFAULTS=1``)."""
    return os.environ.get(DEFAULTS) == "1"


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        major, minor = (int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    return major, minor


def fast_compile_options() -> dict[str, bool | int]:
    """``FAST_COMPILE``'s options that the installed jaxlib knows (all but the versioned ones if unknown)."""
    version = _jaxlib_version()
    return {
        name: value
        for name, (value, since) in FAST_COMPILE.items()
        if since is None or (version is not None and version >= since)
    }


def fast_compile_flags() -> list[str]:
    """``fast_compile_options`` as ``XLA_FLAGS`` entries (``--name=value``)."""
    return [
        f"--{name}={str(value).lower() if isinstance(value, bool) else value}"
        for name, value in fast_compile_options().items()
    ]


def default_xla_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that must compile with XLA's default options.

    The session's fast-compile flags are dropped from ``XLA_FLAGS``; whatever
    the flags were before the tests is kept.
    """
    env = dict(os.environ, **extra)
    if OUTSIDE in env:
        env["XLA_FLAGS"] = env.pop(OUTSIDE)
    return env
