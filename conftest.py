"""Test sessions compile for compile speed: ``XLA_FLAGS`` gets the fast-compile options before JAX starts.

The options, why they leave every result unchanged, and how to run with XLA's
defaults instead (``JCB_TEST_XLA_DEFAULTS=1``) are in
``tests/support/xla_flags.py``, the one list of them (``tests.support`` passes
the same options to its compilations). That file is loaded here by its path:
importing the ``tests.support`` package imports JAX, and these flags must be
in the environment before JAX starts a backend. Flags already in ``XLA_FLAGS``
come last, so they win.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib


def _xla_flags_module():
    path = pathlib.Path(__file__).resolve().parent / "tests" / "support" / "xla_flags.py"
    spec = importlib.util.spec_from_file_location("_jcb_test_xla_flags", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_flags = _xla_flags_module()
if _flags.OUTSIDE not in os.environ and not _flags.xla_defaults_requested():
    # pytest-xdist's workers inherit this environment, so they see OUTSIDE set and keep the flags.
    os.environ[_flags.OUTSIDE] = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = " ".join([*_flags.fast_compile_flags(), os.environ[_flags.OUTSIDE]]).strip()
