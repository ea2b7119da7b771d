"""The dtypes a MindSpore checkpoint holds: MindSpore's and safetensors' names of them, and NumPy's.

``BFloat16`` is ``ml_dtypes.bfloat16`` (imported only when one is met).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jax_conv_bpi._src.mindspore.checkpoint import optional

__all__ = ["NUMPY_OF_TENSOR_TYPE", "SAFETENSORS_DTYPES", "is_array_like", "np_dtype", "tensor_type"]

# MindSpore's tensor_type strings (str(mindspore dtype)) <-> NumPy dtypes; "BFloat16" is ml_dtypes.bfloat16.
NUMPY_OF_TENSOR_TYPE = {
    "Bool": "bool",
    "Int8": "<i1",
    "Int16": "<i2",
    "Int32": "<i4",
    "Int64": "<i8",
    "UInt8": "<u1",
    "UInt16": "<u2",
    "UInt32": "<u4",
    "UInt64": "<u8",
    "Float16": "<f2",
    "Float32": "<f4",
    "Float64": "<f8",
    "BFloat16": "bfloat16",
}
SAFETENSORS_DTYPES = {
    "BOOL": "bool",
    "I8": "<i1",
    "I16": "<i2",
    "I32": "<i4",
    "I64": "<i8",
    "U8": "<u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "F16": "<f2",
    "F32": "<f4",
    "F64": "<f8",
    "BF16": "bfloat16",
}


def np_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a value of the tables above."""
    if name == "bfloat16":
        return np.dtype(optional.require("ml_dtypes", "ml_dtypes").bfloat16)
    return np.dtype(name)


def tensor_type(dtype: np.dtype) -> str | None:
    """MindSpore's ``tensor_type`` for ``dtype`` (any byte order), or None if a checkpoint cannot hold it."""
    for mindspore_name, name in NUMPY_OF_TENSOR_TYPE.items():
        if name == "bfloat16":
            if dtype.name == "bfloat16":
                return mindspore_name
        elif dtype == np.dtype(name) or (dtype.kind != "b" and dtype.newbyteorder("<") == np.dtype(name)):
            return mindspore_name
    return None


def is_array_like(value: Any) -> bool:
    """Whether ``value`` is a NumPy array or scalar, or has a shape, a dtype and ``__array__`` (a JAX array)."""
    return isinstance(value, (np.ndarray, np.generic)) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__")
    )
