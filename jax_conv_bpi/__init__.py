"""MindSpore's ``Conv2DBackpropInput`` (transposed convolution) for JAX.

Exact MindSpore semantics, a custom backward that stays inside the
convolution family, and every JAX transformation.

Example:
  >>> import jax.numpy as jnp
  >>> import jax_conv_bpi as jcb
  >>> op = jcb.Conv2DBackpropInput(out_channel=32, kernel_size=3)
  >>> op(jnp.ones((10, 32, 30, 30)), jnp.ones((32, 32, 3, 3)), (10, 32, 32, 32)).shape
  (10, 32, 32, 32)
"""

from ._classes import Conv2D, Conv2DBackpropFilter, Conv2DBackpropInput, Conv2DTranspose
from ._formulations import cpu_compiler_options
from ._ops import (
    backprop_filter_p,
    backprop_input_p,
    conv2d,
    conv2d_backprop_filter,
    conv2d_backprop_input,
    conv2d_p,
)
from ._padding import conv2d_output_size, valid_input_sizes

__version__ = "0.1.0"

__all__ = [
    "Conv2D",
    "Conv2DBackpropFilter",
    "Conv2DBackpropInput",
    "Conv2DTranspose",
    "backprop_filter_p",
    "backprop_input_p",
    "conv2d",
    "conv2d_backprop_filter",
    "conv2d_backprop_input",
    "conv2d_output_size",
    "conv2d_p",
    "cpu_compiler_options",
    "valid_input_sizes",
]
