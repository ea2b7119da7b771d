"""The private implementation of ``jax_conv_bpi``, one sub-package per layer of the data path.

Imports go one way, lowest first (``tests/test_architecture.py`` checks it):
``base`` (geometry, arithmetic, shared validators) <- ``native`` (the optional
kernels) <- ``lowering`` (portable and CPU formulations, path rules) <- ``op``
(the three primitives, sharding, ``conv_transpose`` and lax's gate) <-
``mindspore`` (MindSpore's ops, layers, checkpoints and gate). Users import
the public modules (``jax_conv_bpi``, ``jax_conv_bpi.ops``, ``jax_conv_bpi.nn``),
never these.
"""
