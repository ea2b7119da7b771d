"""jax_conv_bpi's native CPU kernels, compiled when this package was installed.

The plugin of ``jax_conv_bpi``'s ``[native]`` extra: one shared library,
``libjcb_native.so`` (``LIBRARY``), whose XLA FFI handlers ``jax_conv_bpi``
registers, and what its build recorded: the jaxlib whose FFI headers it was
compiled against, the compiler and its flags. ``jax_conv_bpi`` loads it only
where the jaxlib it runs with is that one and the library's C interface is the
version it expects (``ABI``); ``jax_conv_bpi.native_status()`` says which.

This package has no API of its own beyond these names; install it from a
checkout of jax_conv_bpi with ``pip install ./native``.
"""

from __future__ import annotations

from pathlib import Path

from jax_conv_bpi_native._build import ABI, BUILD_TYPE, COMPILER, FLAGS, JAXLIB_VERSION

__all__ = ["ABI", "BUILD_TYPE", "COMPILER", "FLAGS", "JAXLIB_VERSION", "LIBRARY", "__version__"]

__version__ = "0.2.0"
LIBRARY = Path(__file__).with_name("libjcb_native.so")
"""The compiled kernels."""
