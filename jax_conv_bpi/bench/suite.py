"""The benchmark's shape suite: one convolution geometry per entry.

A shape describes the *forward* convolution whose input gradient is timed:
``x`` is ``(N, C_in, H, W)``, the weight ``(C_out, C_in/group, KH, KW)`` and
``dout`` the forward output ``(N, C_out, Ho, Wo)``. ``shapes.json`` (next to
this module) holds the 13 layers of the standard suite.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from .._padding import effective_kernel, output_length

SUITE_PATH = pathlib.Path(__file__).with_name("shapes.json")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark geometry (NCHW, OIHW); ``pad`` is (top, bottom, left, right)."""

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
        if self.C_in % self.group or self.C_out % self.group:
            raise ValueError(f"{self.name}: group {self.group} must divide C_in {self.C_in} and C_out {self.C_out}")
        if min(self.dout_hw) < 1:
            raise ValueError(f"{self.name}: the kernel does not fit the padded input")

    @classmethod
    def from_dict(cls, d: dict) -> Shape:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown shape keys {sorted(unknown)} in {d.get('name', d)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("stride", "pad", "dilation"):
            d[k] = list(d[k])
        return d

    # -- derived quantities ---------------------------------------------------

    @property
    def extent(self) -> tuple[int, int]:
        return (effective_kernel(self.KH, self.dilation[0]), effective_kernel(self.KW, self.dilation[1]))

    @property
    def dout_hw(self) -> tuple[int, int]:
        """``dout``'s (height, width): the library's own output-size arithmetic, in pad mode.

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

        def half(size: int, s: int, e: int) -> int:
            h = size // 2
            h += (size - h) % s
            return size if h < e else h

        h, w = half(self.H, self.stride[0], self.extent[0]), half(self.W, self.stride[1], self.extent[1])
        return dataclasses.replace(self, H=h, W=w)

    def arrays(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Seeded float32 ``dout`` and weight (weight scaled like a He init)."""
        rng = np.random.default_rng(seed)
        dout = rng.standard_normal(self.dout_shape, dtype=np.float32)
        fan_in = (self.C_in // self.group) * self.KH * self.KW
        w = rng.standard_normal(self.w_shape, dtype=np.float32) * np.float32((2.0 / fan_in) ** 0.5)
        return dout, w

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


def load_suite(path: str | pathlib.Path | None = None) -> list[Shape]:
    """The shapes of a suite file (default: the bundled ``shapes.json``)."""
    with open(path or SUITE_PATH) as f:
        return [Shape.from_dict(d) for d in json.load(f)]


def select(shapes: Sequence[Shape], names: Iterable[str] | None) -> list[Shape]:
    """Shapes by name (in the order given); ``None`` keeps all."""
    if not names:
        return list(shapes)
    by_name = {s.name: s for s in shapes}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"unknown shape name(s) {missing}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]
