"""The optional dependencies of the checkpoint functions, imported only when a function needs them.

flax, protobuf, safetensors and ml_dtypes come with the extra
``pip install 'jax_conv_bpi[nn]'``; a missing one raises an ``ImportError``
that says so.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["nnx", "require"]

_INSTALL_HINT = "pip install 'jax_conv_bpi[nn]'"


def require(module: str, package: str) -> ModuleType:
    """Import ``module`` (of the pip package ``package``), or raise an ImportError naming the extra."""
    try:
        parts = module.split(".")
        for depth in range(1, len(parts)):  # the parents first: a blocked parent with a cached child still fails
            importlib.import_module(".".join(parts[:depth]))
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"jax_conv_bpi's MindSpore checkpoint functions need the '{package}' package: {_INSTALL_HINT}"
        ) from e


def nnx() -> ModuleType:
    """``flax.nnx``."""
    return require("flax.nnx", "flax")
