"""The XLA CPU compiler options this library recommends for users' own ``jax.jit`` compilations.

Today they keep convolutions off jaxlib 0.10's YNNPACK backend (``xla_cpu``,
the workaround module, says why); once a jaxlib needs no workaround this
returns ``{}`` and callers need not change.
"""

from __future__ import annotations

from jax_conv_bpi._src.lowering import xla_cpu

__all__ = ["cpu_compiler_options"]


def cpu_compiler_options() -> dict[str, str]:
    """XLA CPU compiler options that send convolutions to XLA's non-YNNPACK backend.

    For ``jax.jit(f, compiler_options=cpu_compiler_options())``: it applies to
    that one compilation only (no global flag) and to EVERY convolution in
    ``f``, not only this library's. Returns ``{}`` when the installed jaxlib
    does not know the option. Only for CPU compilations. It also removes the
    YNNPACK fusions jaxlib 0.10.2 forms around some reductions: that avoids a
    crash of XLA CPU in ``jax.jit(jax.hessian(...))`` of a small grouped 3-D
    ``conv_transpose`` (docs/errors.md, "Known XLA CPU issues").

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> step = jax.jit(
      ...     lambda d, w: jcb.conv2d_backprop_input(d, w, (1, 2, 5, 5)),
      ...     compiler_options=jcb.cpu_compiler_options(),
      ... )
      >>> step(jnp.ones((1, 3, 3, 3)), jnp.ones((3, 2, 3, 3))).shape
      (1, 2, 5, 5)
    """
    return xla_cpu.ynn_convolution_off()
