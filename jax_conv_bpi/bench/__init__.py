"""Benchmark of ``conv2d_backprop_input`` against plain JAX and PyTorch.

Run ``python -m jax_conv_bpi.bench`` (``--quick`` for a run under a minute,
``--help`` for the options). For every shape of the suite (``shapes.json``,
13 layers of common networks) it checks that the implementations agree,
then times, interleaved in one process after warm-up:

* ``jax_conv_bpi.conv2d_backprop_input`` under ``jax.jit``;
* ``jax.vjp`` of ``lax.conv_general_dilated`` w.r.t. its input, under
  ``jax.jit`` (what plain JAX gives);
* PyTorch ``F.conv_transpose2d`` and ``torch.nn.grad.conv2d_input`` when
  PyTorch is installed (``pip install 'jax_conv_bpi[torch]'``);

and a training step (forward ``conv2d`` + both gradients) against plain
``jax.grad``. It reports medians, speedups (``t_peer / t_ours``), GFLOP/s,
the share of the matmul peak measured in the same run and the peak memory of
each compiled executable on the largest shape, as a table, JSON (``--json``)
and a bar chart (``--png``, needs matplotlib).

The functions are importable for scripting::

    from jax_conv_bpi import bench
    result = bench.run(bench.Config(shapes=bench.load_suite()[:2], torch=False))
"""

from .runner import Config, main, run
from .suite import Shape, load_suite, select

__all__ = ["Config", "Shape", "load_suite", "main", "run", "select"]
