"""The benchmark's shape suites: one convolution geometry per entry.

A shape describes the *forward* convolution whose input gradient is timed:
``x`` is ``(N, C_in, *spatial)``, the weight ``(C_out, C_in/group, *kernel)``
and ``dout`` the forward output ``(N, C_out, *out)``, all channels-first.

* ``Shape``: a 2-D layer (``H``, ``W``, ``KH``, ``KW``, ``pad`` as
  ``(top, bottom, left, right)``), timed through the MindSpore API
  ``conv2d_backprop_input``. ``shapes.json`` (next to this module) holds the
  13 layers of the standard suite.
* ``ShapeND``: a 1-, 2- or 3-D layer (``spatial``, ``kernel``, ``stride``,
  ``dilation`` tuples, ``pad`` one ``(lo, hi)`` pair per axis), timed through
  ``conv_transpose``. ``shapes_nd.json`` holds the 1-D and 3-D suite (audio
  vocoders and separators, volumetric segmentation).

Both share the attributes the runner reads (``rank``, ``spatial``,
``kernel``, ``stride``, ``dilation``, ``pad_pairs``, ``x_shape``,
``dout_shape``, ``w_shape``, ``flops``, ...). A suite file may mix the two
kinds: an entry with a ``spatial`` key is an N-D shape.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Self

import numpy as np

SUITE_PATH = pathlib.Path(__file__).with_name("shapes.json")
SUITE_ND_PATH = pathlib.Path(__file__).with_name("shapes_nd.json")


# The library's size arithmetic of one spatial axis (O = (S + lo + hi - ek) // s + 1 forward, its
# inverse plus output_padding transposed), written out here: the benchmark uses the public API only.


def effective_kernel(k: int, d: int) -> int:
    """Extent of a kernel of size ``k`` with dilation ``d``."""
    return (k - 1) * d + 1


def output_length(size: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    """The forward convolution's output size on one axis (negative when no window fits at all)."""
    return (size + lo + hi - effective_kernel(k, d)) // s + 1


def transpose_input_length(out: int, k: int, s: int, d: int, lo: int, hi: int, output_padding: int) -> int:
    """The size ``conv_transpose`` produces on one axis from ``out``."""
    return (out - 1) * s - lo - hi + effective_kernel(k, d) + output_padding


def _halved(size: int, s: int, e: int) -> int:
    """About half of ``size``, with the same residue modulo the stride ``s``; ``size`` if below the extent ``e``."""
    h = size // 2
    h += (size - h) % s
    return size if h < e else h


def _seeded_arrays(shape: Shape | ShapeND, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded float32 ``dout`` and weight (weight scaled like a He init)."""
    rng = np.random.default_rng(seed)
    dout = rng.standard_normal(shape.dout_shape, dtype=np.float32)
    fan_in = (shape.C_in // shape.group) * math.prod(shape.kernel)
    w = rng.standard_normal(shape.w_shape, dtype=np.float32) * np.float32((2.0 / fan_in) ** 0.5)
    return dout, w


def _output_padding(shape: Shape | ShapeND) -> tuple[int, ...]:
    """Per axis, the ``output_padding`` that makes a transposed convolution give ``spatial``."""
    return tuple(
        size - transpose_input_length(o, k, s, d, lo, hi, 0)
        for size, o, k, s, d, (lo, hi) in zip(
            shape.spatial, shape.dout_spatial, shape.kernel, shape.stride, shape.dilation, shape.pad_pairs
        )
    )


def _listed(value: Any) -> Any:
    """Tuples, nested ones too, as the suite files' lists."""
    return [_listed(v) for v in value] if isinstance(value, tuple) else value


def _check_group_and_fit(shape: Shape | ShapeND) -> None:
    """The last checks of both kinds of shape: the group divides both channel counts, and the kernel fits."""
    if shape.C_in % shape.group or shape.C_out % shape.group:
        raise ValueError(f"{shape.name}: group {shape.group} must divide C_in {shape.C_in} and C_out {shape.C_out}")
    if min(shape.dout_spatial) < 1:
        raise ValueError(f"{shape.name}: the kernel does not fit the padded input")


@dataclasses.dataclass(frozen=True)
class _SuiteEntry:
    """The suite files' form of ``Shape`` and ``ShapeND``: a dict of the fields, tuples as lists."""

    _KIND: ClassVar[str]  # in the error for an unknown key

    @classmethod
    def from_dict(cls, d: dict) -> Self:
        """``cls(**d)``, naming the keys ``cls`` does not have."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls._KIND} keys {sorted(unknown)} in {d.get('name', d)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return {k: _listed(v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class Shape(_SuiteEntry):
    """One benchmark geometry (NCHW, OIHW); ``pad`` is (top, bottom, left, right)."""

    _KIND: ClassVar[str] = "shape"

    name: str
    N: int
    C_in: int
    C_out: int
    H: int
    W: int
    KH: int
    KW: int
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    group: int = 1
    why: str = ""

    def __post_init__(self):
        for field in ("stride", "dilation", "pad"):
            object.__setattr__(self, field, tuple(int(v) for v in getattr(self, field)))
        if len(self.stride) != 2 or len(self.dilation) != 2 or len(self.pad) != 4:
            raise ValueError(f"{self.name}: stride/dilation need 2 entries and pad 4, got {self}")
        _check_group_and_fit(self)

    # -- derived quantities ---------------------------------------------------

    @property
    def rank(self) -> int:
        """Number of spatial dimensions: 2."""
        return 2

    @property
    def spatial(self) -> tuple[int, int]:
        return (self.H, self.W)

    @property
    def kernel(self) -> tuple[int, int]:
        return (self.KH, self.KW)

    @property
    def pad_pairs(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``pad`` as one ``(lo, hi)`` pair per spatial axis."""
        return (self.pad[0:2], self.pad[2:4])  # type: ignore[return-value]

    @property
    def dout_spatial(self) -> tuple[int, int]:
        return self.dout_hw

    @property
    def output_padding(self) -> tuple[int, ...]:
        """What a PyTorch-style transposed convolution needs to give exactly ``(H, W)``."""
        return _output_padding(self)

    @property
    def extent(self) -> tuple[int, int]:
        return (effective_kernel(self.KH, self.dilation[0]), effective_kernel(self.KW, self.dilation[1]))

    @property
    def dout_hw(self) -> tuple[int, int]:
        """``dout``'s (height, width): the forward convolution's output size (``output_length``), in pad mode.

        Negative when the kernel does not fit (``__post_init__`` rejects that).
        """
        return tuple(  # type: ignore[return-value]
            output_length(size, k, s, d, *self.pad[2 * a : 2 * a + 2])
            for a, (size, k, s, d) in enumerate(zip((self.H, self.W), (self.KH, self.KW), self.stride, self.dilation))
        )

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C_in, self.H, self.W)

    @property
    def dout_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C_out, *self.dout_hw)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.C_out, self.C_in // self.group, self.KH, self.KW)

    @property
    def depthwise(self) -> bool:
        return self.group > 1 and self.group == self.C_in == self.C_out

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of the transposed convolution (no work on padding zeros counted)."""
        ho, wo = self.dout_hw
        return 2 * self.N * ho * wo * self.C_out * (self.C_in // self.group) * self.KH * self.KW

    @property
    def io_bytes(self) -> int:
        """float32 bytes of ``dout`` + weight + result."""
        return 4 * sum(int(np.prod(s)) for s in (self.dout_shape, self.w_shape, self.x_shape))

    def with_batch(self, n: int) -> Shape:
        return dataclasses.replace(self, N=n)

    def scaled_down(self, factor: int) -> Shape:
        """About ``1/factor`` of the work: a smaller batch, else half the height and width.

        Halved sizes keep their residue modulo the stride, so the output padding
        and the phase structure of the strided shapes stay those of the original.
        """
        if self.N >= factor:
            return self.with_batch(self.N // factor)
        h, w = _halved(self.H, self.stride[0], self.extent[0]), _halved(self.W, self.stride[1], self.extent[1])
        return dataclasses.replace(self, H=h, W=w)

    def arrays(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Seeded float32 ``dout`` and weight (weight scaled like a He init)."""
        return _seeded_arrays(self, seed)

    def describe(self) -> str:
        s = f"{self.N}x{self.C_in}x{self.H}x{self.W} k{self.KH}x{self.KW}"
        if self.stride != (1, 1):
            s += f" s{self.stride[0]}x{self.stride[1]}" if self.stride[0] != self.stride[1] else f" s{self.stride[0]}"
        if any(self.pad):
            s += f" p{','.join(map(str, self.pad))}" if len(set(self.pad)) > 1 else f" p{self.pad[0]}"
        if self.dilation != (1, 1):
            s += f" d{self.dilation[0]}x{self.dilation[1]}"
        if self.group > 1:
            s += f" g{self.group}"
        return s + f" Cout{self.C_out}"


def _ints(name: str, field: str, value, rank: int, default: int | None = None) -> tuple[int, ...]:
    """``value`` as ``rank`` ints (an empty value: ``default`` on every axis)."""
    items = tuple(int(v) for v in value) if value else ((default,) * rank if default is not None else ())
    if len(items) != rank:
        raise ValueError(f"{name}: {field} needs {rank} entries (one per spatial axis), got {value!r}")
    return items


@dataclasses.dataclass(frozen=True)
class ShapeND(_SuiteEntry):
    """One benchmark geometry of 1 to 3 spatial dims, channels-first (``NC*``, ``OI*``).

    ``pad`` is one ``(lo, hi)`` pair per spatial axis; ``stride``, ``pad`` and
    ``dilation`` left empty mean 1, 0 and 1 on every axis.
    """

    _KIND: ClassVar[str] = "N-D shape"

    name: str
    N: int
    C_in: int
    C_out: int
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...] = ()
    pad: tuple[tuple[int, int], ...] = ()
    dilation: tuple[int, ...] = ()
    group: int = 1
    why: str = ""

    def __post_init__(self):
        rank = len(self.spatial)
        if not 1 <= rank <= 3:
            raise ValueError(f"{self.name}: 1 to 3 spatial dims, got spatial {self.spatial!r}")
        set_ = object.__setattr__
        set_(self, "spatial", _ints(self.name, "spatial", self.spatial, rank))
        set_(self, "kernel", _ints(self.name, "kernel", self.kernel, rank))
        set_(self, "stride", _ints(self.name, "stride", self.stride, rank, 1))
        set_(self, "dilation", _ints(self.name, "dilation", self.dilation, rank, 1))
        pad = self.pad or ((0, 0),) * rank
        if len(pad) != rank or any(len(p) != 2 for p in pad):
            raise ValueError(f"{self.name}: pad needs {rank} (lo, hi) pairs, got {self.pad!r}")
        set_(self, "pad", tuple((int(lo), int(hi)) for lo, hi in pad))
        if min(self.spatial + self.kernel + self.stride + self.dilation) < 1 or min(sum(self.pad, ())) < 0:
            raise ValueError(f"{self.name}: sizes, strides and dilations must be >= 1 and paddings >= 0")
        _check_group_and_fit(self)

    # -- derived quantities ---------------------------------------------------

    @property
    def rank(self) -> int:
        """Number of spatial dimensions."""
        return len(self.spatial)

    @property
    def pad_pairs(self) -> tuple[tuple[int, int], ...]:
        return self.pad

    @property
    def extent(self) -> tuple[int, ...]:
        return tuple(effective_kernel(k, d) for k, d in zip(self.kernel, self.dilation))

    @property
    def dout_spatial(self) -> tuple[int, ...]:
        """``dout``'s spatial size: ``output_length`` per axis (negative when nothing fits)."""
        return tuple(
            output_length(size, k, s, d, lo, hi)
            for size, k, s, d, (lo, hi) in zip(self.spatial, self.kernel, self.stride, self.dilation, self.pad)
        )

    @property
    def output_padding(self) -> tuple[int, ...]:
        """The ``output_padding`` that makes ``conv_transpose`` give exactly ``spatial``."""
        return _output_padding(self)

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.N, self.C_in, *self.spatial)

    @property
    def dout_shape(self) -> tuple[int, ...]:
        return (self.N, self.C_out, *self.dout_spatial)

    @property
    def w_shape(self) -> tuple[int, ...]:
        return (self.C_out, self.C_in // self.group, *self.kernel)

    @property
    def depthwise(self) -> bool:
        return self.group > 1 and self.group == self.C_in == self.C_out

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of the transposed convolution (no work on padding zeros counted)."""
        taps = math.prod(self.dout_spatial) * math.prod(self.kernel)
        return 2 * self.N * taps * self.C_out * (self.C_in // self.group)

    @property
    def io_bytes(self) -> int:
        """float32 bytes of ``dout`` + weight + result."""
        return 4 * sum(math.prod(s) for s in (self.dout_shape, self.w_shape, self.x_shape))

    def with_batch(self, n: int) -> ShapeND:
        return dataclasses.replace(self, N=n)

    def scaled_down(self, factor: int) -> ShapeND:
        """About ``1/factor`` of the work: a smaller batch, else spatial axes halved in turn.

        As for ``Shape``, halved sizes keep their residue modulo the stride.
        An axis at its kernel's extent is not halved; when none can be, the
        shape stays as it is.
        """
        if self.N >= factor:
            return self.with_batch(self.N // factor)
        spatial, reduced, axis, stuck = list(self.spatial), 1, 0, 0
        while reduced < factor and stuck < self.rank:
            h = _halved(spatial[axis], self.stride[axis], self.extent[axis])
            stuck = stuck + 1 if h == spatial[axis] else 0
            reduced *= spatial[axis] / h
            spatial[axis], axis = h, (axis + 1) % self.rank
        return dataclasses.replace(self, spatial=tuple(spatial))

    def arrays(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Seeded float32 ``dout`` and weight (weight scaled like a He init)."""
        return _seeded_arrays(self, seed)

    def describe(self) -> str:
        def axes(values) -> str:
            return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))

        s = f"{self.rank}-D {self.N}x{self.C_in}x{'x'.join(map(str, self.spatial))} k{axes(self.kernel)}"
        if set(self.stride) != {1}:
            s += f" s{axes(self.stride)}"
        flat = tuple(v for pair in self.pad for v in pair)
        if any(flat):
            s += f" p{flat[0]}" if len(set(flat)) == 1 else f" p{','.join(map(str, flat))}"
        if set(self.dilation) != {1}:
            s += f" d{axes(self.dilation)}"
        if self.group > 1:
            s += f" g{self.group}"
        if any(self.output_padding):
            s += f" op{axes(self.output_padding)}"
        return s + f" Cout{self.C_out}"


AnyShape = Shape | ShapeND


def shape_from_dict(d: dict) -> AnyShape:
    """A ``ShapeND`` for an entry with a ``spatial`` key, else a 2-D ``Shape``."""
    return ShapeND.from_dict(d) if "spatial" in d else Shape.from_dict(d)


def load_suite(path: str | pathlib.Path | None = None) -> list[AnyShape]:
    """The shapes of a suite file (default: the bundled 2-D ``shapes.json``).

    Entries with a ``spatial`` key are read as ``ShapeND``, the others as ``Shape``.
    """
    with open(path or SUITE_PATH) as f:
        return [shape_from_dict(d) for d in json.load(f)]


def load_suite_nd(path: str | pathlib.Path | None = None) -> list[ShapeND]:
    """The N-D shapes of a suite file (default: the bundled 1-D and 3-D ``shapes_nd.json``)."""
    with open(path or SUITE_ND_PATH) as f:
        return [ShapeND.from_dict(d) for d in json.load(f)]


def select(shapes: Sequence[AnyShape], names: Iterable[str] | None) -> list[AnyShape]:
    """Shapes by name (in the order given); ``None`` keeps all."""
    if not names:
        return list(shapes)
    by_name = {s.name: s for s in shapes}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"unknown shape name(s) {missing}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]
