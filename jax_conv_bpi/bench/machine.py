"""The machine a run ran on (the report's header): CPU, memory, versions, load average; and the JAX device."""

from __future__ import annotations

import datetime
import os
import pathlib
import platform as _platform
import subprocess

import jax

import jax_conv_bpi as jcb

from . import impls


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or _platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine skews timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def source_root() -> pathlib.Path:
    """The directory that holds the ``jax_conv_bpi`` package (a checkout's root, or site-packages)."""
    return pathlib.Path(__file__).resolve().parents[2]


def source_revision() -> str | None:
    """``git describe`` of the checkout the package runs from (``None`` when installed)."""
    root = source_root()
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(device, torch_info: dict | None) -> dict:
    from jaxlib.version import __version__ as jaxlib_version  # = jaxlib.__version__, which jaxlib does not re-export

    return {
        "jax_conv_bpi": jcb.__version__,
        "revision": source_revision(),
        "cpu": cpu_model(),
        "cores": impls.usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib(),
        "platform": _platform.platform(),
        "python": _platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib_version,
        "jax_platform": device.platform,
        "jax_device": getattr(device, "device_kind", str(device)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "native": jcb.native_status() if device.platform == "cpu" else None,
        "loadavg_start": load_average(),
        "torch": torch_info,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def pick_device(platform: str | None):
    """The JAX device to run on: ``platform`` is honoured only where a GPU exists."""
    default = jax.devices()[0]
    if platform in (None, "auto") or platform == default.platform:
        return default
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        return default  # CPU-only machine: the option is ignored
    if platform == "cpu":
        return jax.devices("cpu")[0]
    return gpus[0]
