"""The command line, ``python -m jax_conv_bpi.bench`` (``--help`` for the options).

Every mistake in the arguments (an unknown shape name, an unreadable suite
file, names repeated across the suites, ``--reps 0``) is an argparse error:
the usage and the message on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import collections
import warnings

from . import hazard, impls, output
from .config import Config
from .runner import run
from .suite import AnyShape, load_suite, load_suite_nd, select


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jax_conv_bpi.bench",
        description=(
            "Time jax_conv_bpi's transposed convolution (conv2d_backprop_input on the 2-D suite, conv_transpose on "
            "the 1-D/3-D suite) against plain JAX autodiff and PyTorch."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a run under a minute: shapes at ~1/8 of their work (batch/8, else halved sizes), 3 repetitions",
    )
    p.add_argument(
        "--shapes", help="comma-separated shape names, from either suite (default: every shape of both suites)"
    )
    p.add_argument(
        "--suite",
        metavar="PATH",
        help="a shapes JSON file instead of the bundled 2-D suite (entries with 'spatial' are read as N-D shapes)",
    )
    p.add_argument(
        "--suite-nd",
        metavar="PATH",
        help="an N-D shapes JSON file instead of the bundled 1-D/3-D suite (shapes_nd.json)",
    )
    p.add_argument("--no-nd", action="store_true", help="leave out the N-D suite (only the --suite / 2-D shapes)")
    p.add_argument("--reps", type=int, help="timed repetitions per implementation (default 7, quick 3)")
    p.add_argument("--warmup", type=int, help="untimed calls before timing (default 2, quick 1)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    p.add_argument("--no-training", action="store_true", help="skip the training-step section")
    p.add_argument(
        "--no-weight-grad", action="store_true", help="skip the weight-gradient section (on the training shapes)"
    )
    p.add_argument(
        "--no-opt-in",
        action="store_true",
        help="skip the opt-in section (CPU: ours and jax.vjp compiled with jax_conv_bpi.cpu_compiler_options())",
    )
    p.add_argument(
        "--platform",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="JAX device (and torch CUDA) where a GPU exists; ignored on CPU-only machines",
    )
    p.add_argument(
        "--dtype",
        choices=impls.DTYPES,
        default="float32",
        help="dtype of every implementation's arrays (JAX and PyTorch); bfloat16 widens the check's tolerance",
    )
    p.add_argument(
        "--precision",
        choices=impls.PRECISIONS,
        default="highest",
        help="highest: full float32 everywhere (default); default: the N-D entries' conv_transpose and lax "
        "baselines at the backend's default precision and PyTorch's TF32 on (TF32 on NVIDIA GPUs); the 2-D "
        "entries (MindSpore's API) stay at full float32 by design",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    p.add_argument("--png", metavar="PATH", help="write a bar chart of the speedups (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--probe-shape", help=argparse.SUPPRESS)
    return p


def load_file(loader, path: str | None, flag: str) -> list[AnyShape]:
    """``loader(path)``; a missing, unreadable or invalid file is a ``ValueError`` naming ``flag``."""
    try:
        return loader(path)
    except (OSError, ValueError, TypeError) as e:
        if path is None:
            raise  # the bundled suite: not the user's argument
        raise ValueError(f"{flag} {path}: {e}") from e


def suite_from_args(args: argparse.Namespace) -> list[AnyShape]:
    """The 2-D suite (``--suite`` or bundled), then the N-D one (``--suite-nd`` or bundled, unless ``--no-nd``)."""
    shapes = load_file(load_suite, args.suite, "--suite")
    if not args.no_nd:
        shapes += load_file(load_suite_nd, args.suite_nd, "--suite-nd")
    dup = sorted(name for name, n in collections.Counter(s.name for s in shapes).items() if n > 1)
    if dup:
        raise ValueError(f"shape names must be unique across the suites, got duplicates {dup}")
    return shapes


def config_from_args(args: argparse.Namespace) -> Config:
    """The ``Config`` of parsed arguments; a ``ValueError`` for an invalid one (``main`` makes it a usage error)."""
    if args.reps is not None and args.reps < 1:
        raise ValueError(f"--reps must be at least 1, got {args.reps}")
    if args.warmup is not None and args.warmup < 0:
        raise ValueError(f"--warmup must be at least 0, got {args.warmup}")
    shapes = select(suite_from_args(args), args.shapes.split(",") if args.shapes else None)
    overrides = {
        "torch": not args.no_torch,
        "training": not args.no_training,
        "weight_grad": not args.no_weight_grad,
        "opt_in": not args.no_opt_in,
        "platform": args.platform,
        "seed": args.seed,
        "progress": not args.no_progress,
        "dtype": args.dtype,
        "precision": args.precision,
    }
    if args.reps is not None:
        overrides["reps"] = args.reps
    if args.warmup is not None:
        overrides["warmup"] = args.warmup
    if args.quick:
        return Config.quick_config(shapes, **overrides)
    return Config(shapes=shapes, **overrides)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run, print the report (and write ``--json`` / ``--png``); 1 when a check failed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.probe_shape:
        return hazard.run_probe(args.probe_shape)
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    if config.reps < 7 and not config.quick:
        warnings.warn(f"--reps {config.reps}: medians of fewer than 7 runs are noisy", stacklevel=1)
    result = run(config)
    return output.write(result, json_path=args.json, png_path=args.png)
