"""What a benchmark run does: ``Config``, and the training-step shapes of ``--quick``."""

from __future__ import annotations

import dataclasses

from . import impls
from .suite import AnyShape

# --quick times the training step on one shape per kind of layer only (compiling
# three gradients per shape is most of a quick run's time), and on at least one
# shape of every rank that was selected.
QUICK_TRAINING = (
    "dcgan_g_k4s2p1_b32",
    "resnet50_l1_k3s1p1_b32",
    "unet_up_k2s2_b1",
    "mobilenetv2_dw_k3s2p1_b32",
    "hifigan_up2_k16s8p4_b16",
    "unet3d_deconv_k3s2p1_b1",
)


@dataclasses.dataclass
class Config:
    """What to run. ``quick_config()`` gives the settings of ``--quick``."""

    shapes: list[AnyShape]  # 2-D ``Shape`` and ``ShapeND`` entries, timed in this order
    reps: int = 7
    warmup: int = 2
    torch: bool = True
    training: bool = True
    weight_grad: bool = True  # the weight gradient alone, on the training-step shapes
    platform: str | None = None
    peak_n: int | None = None  # matmul size for the peak; None: 2048 on CPU (quick 1024), 8192 on GPU
    min_sample_s: float = 0.005
    check_rtol: float = 1e-4
    seed: int = 0
    quick: bool = False
    progress: bool = True
    probe_hazards: bool = True
    training_shapes: tuple[str, ...] | None = None  # names (training step, weight gradient); None: every shape
    settle: bool = True  # one untimed call of the same implementation before each sample
    opt_in: bool = True  # on CPU, also time ours and jax.vjp with jax_conv_bpi.cpu_compiler_options()
    dtype: str = "float32"  # the arrays of every implementation: "float32" or "bfloat16"
    # "highest": full float32 everywhere; "default": the N-D entries' JAX code at the backend's default
    # precision (TF32 on NVIDIA GPUs) and PyTorch's TF32 on for them; the 2-D entries stay HIGHEST.
    precision: str = "highest"

    def __post_init__(self):
        if self.dtype not in impls.DTYPES:
            raise ValueError(f"dtype must be one of {impls.DTYPES}, got {self.dtype!r}")
        if self.precision not in impls.PRECISIONS:
            raise ValueError(f"precision must be one of {impls.PRECISIONS}, got {self.precision!r}")

    @classmethod
    def quick_config(cls, shapes: list[AnyShape], **overrides) -> Config:
        """Every suite shape at about 1/8 of its work, 3 repetitions, a smaller peak matmul."""
        small = [s.scaled_down(8) for s in shapes]
        training = quick_training(shapes)
        settings = {
            "reps": 3,
            "warmup": 1,
            "min_sample_s": 0.002,
            "quick": True,
            "training_shapes": training,
        }
        settings.update(overrides)
        return cls(shapes=small, **settings)


def quick_training(shapes: list[AnyShape]) -> tuple[str, ...]:
    """``QUICK_TRAINING``'s selected shapes, plus the first shape of each kind and rank that has none."""
    names = [s.name for s in shapes]
    chosen = [n for n in QUICK_TRAINING if n in names]
    covered = {_kind(s) for s in shapes if s.name in chosen}
    for s in shapes:
        if _kind(s) not in covered:
            chosen.append(s.name)
            covered.add(_kind(s))
    return tuple(chosen)


def _kind(shape: AnyShape) -> tuple[str, int]:
    return (type(shape).__name__, shape.rank)
