"""The many-device grid of ``test_sharding.py``, run in child processes with 8 host CPU devices.

``python tests/support/sharding_worker.py OUT [INDEX PARTS]`` (with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``) runs child INDEX's
share of the cases (``part``: every PARTS-th entry point, so PARTS children
run side by side) and writes ``OUT.json`` (one record per case: the
collectives of the compiled HLO, the result's sharding, a skip's reason or an
exception) and ``OUT.npz`` (every result and oracle). The module imports no
JAX at its top and nothing of ``tests/`` (it runs as a script, by its path):
``test_sharding.py`` takes the case ids from it at collection and asserts on
what the children report.

A case is ``mesh-parallelism-entry``:

* mesh kinds: ``explicit`` (``AxisType.Explicit``, ``jax.make_mesh``'s default
  in current JAX), ``auto`` (``AxisType.Auto``; on a JAX without axis types,
  the plain mesh), ``use_mesh`` (explicit axes under ``jax.set_mesh``, called
  ``jax.sharding.use_mesh`` in earlier JAX), ``shard_map`` (over
  ``jax.make_mesh``'s default mesh, replication checks on) and ``pmap``;
* parallelisms: ``data`` (batch split over the 8 devices, the weight
  replicated), ``channel`` (the contracted channel axis split, a reduction; for
  the weight gradient, ``dout``'s channels, which the result keeps) and
  ``train`` (the gradient of a replicated weight in a data-parallel step, the
  loss a mean of squares);
* entries (``ENTRIES``): ``conv2d_backprop_input``, ``conv_transpose`` in 1-D,
  2-D and 3-D, the ``ops`` shells and the ``nn`` layers, 1-D to 3-D, and the
  weight gradient ``conv2d_backprop_filter``.

Each case is traced, compiled and run once. Its oracle is the same entry
point on unsharded arrays on one device (``ref-*``), itself compared with
``jax.vjp`` of ``lax.conv_general_dilated`` (``lax-*``). ``test_sharding.py``
runs the children with ``--xla_backend_optimization_level=0`` and
``--xla_llvm_disable_expensive_passes``: they lower only LLVM's effort (the
compilations are most of the time); the HLO passes that partition a program
and place its collectives are unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import sys
import time
import traceback
from collections.abc import Callable

DEVICES = 8
N = 2 * DEVICES  # two examples per device
C = DEVICES  # channels, one per device when split
MESH_KINDS = ("explicit", "auto", "use_mesh", "shard_map", "pmap")

# name: (kind, rank). kind ``transpose``: (dout, weight) -> the input gradient; ``forward``: (x, weight) -> y;
# ``filter``: (dout, x) -> the weight gradient.
ENTRIES = {
    "conv2d_backprop_input": ("transpose", 2),
    "conv_transpose_1d": ("transpose", 1),
    "conv_transpose_2d": ("transpose", 2),
    "conv_transpose_3d": ("transpose", 3),
    "ops.conv1d": ("forward", 1),
    "ops.conv3d": ("forward", 3),
    "ops.Conv3DTranspose": ("transpose", 3),
    "nn.Conv1dTranspose": ("transpose", 1),
    "nn.Conv2dTranspose": ("transpose", 2),
    "nn.Conv3d": ("forward", 3),
    "conv2d_backprop_filter": ("filter", 2),
}
ERROR_CASES = ("explicit-error-spatial", "explicit-error-group")


def parallelisms(name: str) -> tuple[str, ...]:
    return ("data", "channel") if ENTRIES[name][0] == "filter" else ("data", "channel", "train")


def grid() -> list[str]:
    """Every case id of the sharded grid, ``mesh-parallelism-entry``."""
    return [f"{mesh}-{par}-{name}" for mesh in MESH_KINDS for name in ENTRIES for par in parallelisms(name)]


def expected_result_spec(name: str, par: str) -> tuple[str | None, ...]:
    """Under explicit axes: how the result is split over the mesh axis ``d`` (its first axis, or not at all)."""
    kind, rank = ENTRIES[name]
    split = (par == "data" and kind != "filter") or (par == "channel" and kind == "filter")
    return ("d" if split else None,) + (None,) * (rank + 1)


def expected_all_reduces(name: str, par: str) -> int:
    """Collectives a case needs: one all-reduce where shards are summed (contracted batch or channels), else none."""
    kind = ENTRIES[name][0]
    if par == "train":
        return 1
    if par == "data":
        return int(kind == "filter")
    return int(kind != "filter")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry point as ``call(a, b)`` on channels-first operands of shapes ``a`` and ``b``.

    Sizes the call needs (``input_size``, ``weight_shape``, a layer's
    channels) are read from the operands, so the same call runs on global
    arrays and on one shard (``shard_map``, ``pmap``). ``strides`` and
    ``pairs`` are the forward convolution's, for the ``lax`` oracle;
    ``x_shape`` is the forward input's shape (``transpose``) or the weight's
    (``filter``).
    """

    name: str
    a: tuple[int, ...]
    b: tuple[int, ...]
    call: Callable
    strides: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...]
    x_shape: tuple[int, ...] | None = None

    @property
    def kind(self) -> str:
        return ENTRIES[self.name][0]


def _layer_call(make, unit_axis: bool = False):
    """An ``nn`` layer as a function of ``(x, weight)``: a layer per channel count (global, one shard) built once,
    eagerly, its weight replaced by the traced argument (``nnx.split`` / ``nnx.merge``)."""
    from flax import nnx

    built = {c: nnx.split(make(c, rngs=nnx.Rngs(0))) for c in (C, C // DEVICES)}

    def call(x, w):
        graphdef, state = built[x.shape[1]]
        weight = state["weight"].replace(w[:, :, None] if unit_axis else w)
        return nnx.merge(graphdef, nnx.State({**state, "weight": weight}))(x)

    return call


def entries(names) -> dict[str, Entry]:
    import jax_conv_bpi as jcb
    from jax_conv_bpi import ops

    n, c = N, C
    s2, p1 = (2, 2), ((1, 1), (1, 1))
    table = {
        "conv2d_backprop_input": lambda: Entry(
            "conv2d_backprop_input",
            (n, c, 5, 5),
            (c, 4, 4, 4),
            lambda d, w: jcb.conv2d_backprop_input(
                d, w, (d.shape[0], w.shape[1], 10, 10), stride=2, pad_mode="pad", pad=1
            ),
            s2,
            p1,
            (n, 4, 10, 10),
        ),
        "conv_transpose_1d": lambda: Entry(
            "conv_transpose_1d",
            (n, c, 6),
            (c, 4, 4),
            lambda d, w: jcb.conv_transpose(d, w, 2, [(1, 1)]),
            (2,),
            ((1, 1),),
            (n, 4, 12),
        ),
        "conv_transpose_2d": lambda: Entry(
            "conv_transpose_2d",
            (n, c, 5, 5),
            (c, 4, 3, 3),
            lambda d, w: jcb.conv_transpose(d, w, 2, 1, output_padding=1),
            s2,
            p1,
            (n, 4, 10, 10),
        ),
        "conv_transpose_3d": lambda: Entry(
            "conv_transpose_3d",
            (n, c, 3, 3, 3),
            (c, 4, 3, 3, 3),
            lambda d, w: jcb.conv_transpose(d, w, 2, 1),
            (2, 2, 2),
            ((1, 1),) * 3,
            (n, 4, 5, 5, 5),
        ),
        "ops.conv1d": lambda: Entry(
            "ops.conv1d",
            (n, c, 9),
            (4, c, 3),
            lambda x, w: ops.conv1d(x, w, stride=2, pad_mode="pad", padding=1),
            (2,),
            ((1, 1),),
        ),
        "ops.conv3d": lambda: Entry(
            "ops.conv3d",
            (n, c, 4, 4, 4),
            (4, c, 3, 3, 3),
            lambda x, w: ops.conv3d(x, w, pad_mode="same"),
            (1, 1, 1),
            ((1, 1),) * 3,
        ),
        "ops.Conv3DTranspose": lambda: Entry(
            "ops.Conv3DTranspose",
            (n, c, 3, 3, 3),
            (c, 4, 2, 2, 2),
            lambda d, w: ops.Conv3DTranspose(in_channel=d.shape[1], out_channel=w.shape[1], kernel_size=2, stride=2)(
                d, w
            ),
            (2, 2, 2),
            ((0, 0),) * 3,
            (n, 4, 6, 6, 6),
        ),
        "nn.Conv1dTranspose": lambda: Entry(
            "nn.Conv1dTranspose",
            (n, c, 6),
            (c, 4, 4),
            _nn_call("Conv1dTranspose", 4, 4, stride=2, pad_mode="pad", padding=1, unit_axis=True),
            (2,),
            ((1, 1),),
            (n, 4, 12),
        ),
        "nn.Conv2dTranspose": lambda: Entry(
            "nn.Conv2dTranspose",
            (n, c, 5, 5),
            (c, 4, 3, 3),
            _nn_call("Conv2dTranspose", 4, 3, stride=2, pad_mode="pad", padding=1),
            s2,
            p1,
            (n, 4, 9, 9),
        ),
        "nn.Conv3d": lambda: Entry(
            "nn.Conv3d",
            (n, c, 5, 5, 5),
            (4, c, 3, 3, 3),
            _nn_call("Conv3d", 4, 3, stride=2, pad_mode="pad", padding=1),
            (2, 2, 2),
            ((1, 1),) * 3,
        ),
        "conv2d_backprop_filter": lambda: Entry(
            "conv2d_backprop_filter",
            (n, c, 4, 4),
            (n, 4, 7, 7),
            lambda d, x: jcb.conv2d_backprop_filter(
                d, x, (d.shape[1], x.shape[1], 3, 3), stride=2, pad_mode="pad", pad=1
            ),
            s2,
            p1,
            (c, 4, 3, 3),
        ),
    }
    return {name: table[name]() for name in names}


def _nn_call(layer: str, out_channels: int, kernel: int, *, unit_axis: bool = False, **kwargs):
    from jax_conv_bpi import nn

    def make(in_channels, *, rngs):
        return getattr(nn, layer)(in_channels, out_channels, kernel, rngs=rngs, **kwargs)

    return _layer_call(make, unit_axis=unit_axis)


def lax_oracle(e: Entry):
    """The entry point written with ``lax.conv_general_dilated`` and ``jax.vjp``."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def conv(x, w):
        return lax.conv_general_dilated(x, w, e.strides, list(e.pairs), precision=lax.Precision.HIGHEST)

    if e.kind == "forward":
        return conv
    if e.kind == "transpose":
        return lambda d, w: jax.vjp(lambda x: conv(x, w), jnp.zeros(e.x_shape, d.dtype))[1](d)[0]
    return lambda d, x: jax.vjp(lambda w: conv(x, w), jnp.zeros(e.x_shape, d.dtype))[1](d)[0]


def loss_of(call):
    """A training step's loss, as a function of the weight and the data: the mean square of the result."""
    import jax.numpy as jnp

    return lambda w, a: jnp.mean(call(a, w) ** 2)


# ---------------------------------------------------------------------------
# HLO inspection
# ---------------------------------------------------------------------------

COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def collectives(hlo_text: str) -> dict[str, list[list[str]]]:
    """The collectives a compiled program runs, by kind: per instruction, the shapes of its result.

    An instruction reads ``name = f32[8,4,3,3]{3,2,1,0} all-reduce(operands), ...``,
    or with a tuple result ``name = (f32[8,4]{1,0}, f32[8,4]{1,0}) all-reduce(...)``
    (XLA's combiner merging several into one). An asynchronous collective is a
    ``-start`` / ``-done`` pair, counted once (its ``-start``).
    """
    found: dict[str, list[list[str]]] = {kind: [] for kind in COLLECTIVES}
    op = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
    for line in hlo_text.splitlines():
        m = op.search(line)
        if m is None or " = " not in line[: m.start()]:
            continue
        result = line[line.index(" = ") + 3 : m.start()]
        found[m.group(1)].append(re.findall(r"[a-z][a-z0-9]*\[[0-9,]*\]", result))
    return found


def _batch_split(out, devices: int) -> bool:
    """Whether ``out``'s shards split its first axis into ``devices`` pieces, every other axis whole."""
    starts = set()
    for s in out.addressable_shards:
        for axis, sl in enumerate(s.index[1:], start=1):
            if (sl.start or 0) != 0 or (sl.stop if sl.stop is not None else out.shape[axis]) != out.shape[axis]:
                return False
        starts.add(s.index[0].start or 0)
    return len(starts) == devices


def _spec(out) -> list[str | None] | None:
    """The result's sharding in its type (explicit axes), one entry per axis; None without ``jax.typeof``."""
    import jax

    if not hasattr(jax, "typeof"):
        return None
    spec = tuple(jax.typeof(out).sharding.spec)
    spec = spec + (None,) * (out.ndim - len(spec))
    return [None if p is None else str(p) for p in spec]


# ---------------------------------------------------------------------------
# Version guards
# ---------------------------------------------------------------------------


def _axis_type(name: str):
    import jax

    axis_type = getattr(jax.sharding, "AxisType", None)
    return None if axis_type is None else getattr(axis_type, name)


def _set_mesh():
    import jax

    return getattr(jax, "set_mesh", None) or getattr(jax.sharding, "use_mesh", None)


def skip_reason(mesh_kind: str, name: str | None) -> str | None:
    import jax

    v = jax.__version__
    if mesh_kind in ("explicit", "use_mesh") and _axis_type("Explicit") is None:
        return f"JAX {v} has no explicit mesh axes (jax.sharding.AxisType)"
    if mesh_kind == "use_mesh" and _set_mesh() is None:
        return f"JAX {v} has neither jax.set_mesh nor jax.sharding.use_mesh"
    if name is not None and name.startswith("nn."):
        try:
            import flax.nnx  # noqa: F401
        except ImportError:
            return f"jax_conv_bpi.nn needs Flax (the [nn] extra), not installed with JAX {v}"
    return None


def make_mesh(kind: str, shape=(DEVICES,), names=("d",), devices=None):
    """``jax.make_mesh``: its default axis types for ``shard_map``, else those the mesh kind names."""
    import jax

    kwargs = {} if devices is None else {"devices": devices}
    axis = {"explicit": "Explicit", "use_mesh": "Explicit", "auto": "Auto"}.get(kind)
    if axis is not None and _axis_type(axis) is not None:
        kwargs["axis_types"] = (_axis_type(axis),) * len(shape)
    return jax.make_mesh(shape, names, **kwargs)


def shard_map(f, mesh, in_specs, out_specs):
    """``jax.shard_map``, or the experimental one before it, each with its default replication checks on."""
    import jax

    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    from jax.experimental.shard_map import shard_map as legacy

    return legacy(f, mesh, in_specs, out_specs)


# ---------------------------------------------------------------------------
# One case: build (trace + lower), then finish (the compiled program run)
# ---------------------------------------------------------------------------


def _specs(kind: str, par: str):
    """Partition specs of (a, b) and of the result over the mesh axis ``d``, and whether the shards are summed."""
    from jax.sharding import PartitionSpec as P

    if par in ("data", "train"):
        if kind == "filter":
            return (P("d"), P("d")), P(), True
        return (P("d"), P()), P("d"), False
    if kind == "transpose":  # dout's channels and the weight's first axis (the same letter)
        return (P(None, "d"), P("d")), P(), True
    if kind == "forward":  # the input's channels and the weight's second axis
        return (P(None, "d"), P(None, "d")), P(), True
    return (P(None, "d"), P()), P("d"), False  # filter: dout's channels are the weight gradient's first axis


def _pmap_operand(v, spec):
    """``v`` for ``pmap``: ``(in_axis, array)``, the axis ``spec`` splits cut into (DEVICES, size / DEVICES)."""
    import jax.numpy as jnp

    axis = next((i for i, p in enumerate(spec) if p is not None), None)
    if axis is None:
        return None, v
    shape = list(v.shape)
    shape[axis : axis + 1] = [DEVICES, shape[axis] // DEVICES]
    return 0, jnp.moveaxis(v.reshape(shape), axis, 0)


@dataclasses.dataclass
class Program:
    lowered: object
    args: tuple
    finish: Callable  # (compiled, out) -> dict of what the record adds


def build(mesh_kind: str, par: str, e: Entry, a, b) -> Program:
    import jax
    import numpy as np
    from jax import lax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    (spec_a, spec_b), spec_out, summed = _specs(e.kind, par)
    train = par == "train"
    batch_out = par == "data" and e.kind != "filter"

    if mesh_kind == "pmap":
        in_a, pa = _pmap_operand(a, spec_a)
        in_b, pb = _pmap_operand(b, spec_b)
        if train:
            step = jax.grad(loss_of(e.call))
            fn = jax.pmap(lambda w, x: lax.psum(step(w, x), "i") / DEVICES, axis_name="i", in_axes=(in_b, in_a))
            args = (pb, pa)
        else:

            def body(x, w):
                out = e.call(x, w)
                return lax.psum(out, "i") if summed else out

            fn, args = jax.pmap(body, axis_name="i", in_axes=(in_a, in_b)), (pa, pb)

        def finish(out):
            rec = {"batch_split": _batch_split(out, DEVICES) if batch_out else None}
            if spec_out == P() or train:  # replicated: every device holds the whole result
                host = np.asarray(out)
                rec["replicas_agree"] = bool(np.all(host == host[:1]))
                return rec, host[0]
            return rec, np.asarray(out).reshape(-1, *out.shape[2:])

        return Program(fn.lower(*args), args, finish)

    mesh = make_mesh(mesh_kind)
    sa = jax.device_put(a, NamedSharding(mesh, spec_a))
    sb = jax.device_put(b, NamedSharding(mesh, spec_b))
    if mesh_kind == "shard_map":
        if train:  # the loss averaged over the shards inside, differentiated outside: w's cotangent is summed
            local = loss_of(e.call)
            f = jax.grad(shard_map(lambda w, x: lax.pmean(local(w, x), "d"), mesh, (spec_b, spec_a), P()))
        else:

            def body(x, w):
                out = e.call(x, w)
                return lax.psum(out, "d") if summed else out

            f = shard_map(body, mesh, (spec_a, spec_b), spec_out)
    else:
        f = jax.grad(loss_of(e.call)) if train else e.call
    args = (sb, sa) if train else (sa, sb)
    if mesh_kind == "use_mesh":
        with _set_mesh()(mesh):
            lowered = jax.jit(f).lower(*args)
    else:
        lowered = jax.jit(f).lower(*args)

    def finish(out):
        rec = {"batch_split": _batch_split(out, DEVICES) if batch_out else None}
        if mesh_kind in ("explicit", "use_mesh"):
            rec["spec"] = _spec(out)
        return rec, np.asarray(out)

    return Program(lowered, args, finish)


def error_case(case_id: str) -> dict:
    """Shardings the op refuses under explicit axes: a clear ``ValueError`` at trace time."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import jax_conv_bpi as jcb

    mesh = make_mesh("explicit")
    if case_id.endswith("spatial"):  # dout split along its length
        d = jax.device_put(jnp.ones((2, 4, 16)), NamedSharding(mesh, P(None, None, "d")))
        w = jax.device_put(jnp.ones((4, 2, 3)), NamedSharding(mesh, P()))

        def call(d, w):
            return jcb.conv_transpose(d, w, 1, "SAME")
    else:  # channels split with groups
        d = jax.device_put(jnp.ones((2, 16, 6)), NamedSharding(mesh, P(None, "d")))
        w = jax.device_put(jnp.ones((16, 1, 3)), NamedSharding(mesh, P("d")))

        def call(d, w):
            return jcb.conv_transpose(d, w, 1, "SAME", feature_group_count=2)

    try:
        jax.jit(call).lower(d, w)
    except ValueError as err:
        return {"raised": "ValueError", "message": str(err)}
    return {"raised": None}


def repro() -> tuple[dict, object, object]:
    """The issue's program: a batch-sharded ``dout`` on a 4-device mesh of ``jax.make_mesh``'s default axes."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import jax_conv_bpi as jcb

    mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
    rng = np.random.default_rng(1)
    dout_np = rng.standard_normal((8, 16, 9, 9)).astype(np.float32)
    w = rng.standard_normal((16, 8, 4, 4)).astype(np.float32)
    dout = jax.device_put(dout_np, NamedSharding(mesh, P("data")))

    def f(d, w):
        return jcb.conv2d_backprop_input(d, w, (8, 8, 18, 18), stride=2, pad_mode="pad", pad=1)

    out = jax.jit(f)(dout, w)
    single = jax.jit(f)(*jax.device_put((dout_np, w), jax.devices()[0]))
    rec = {
        "axis_types": str(getattr(mesh, "axis_types", None)),
        "spec": _spec(out),
        "batch_split": _batch_split(out, 4),
        "devices": len(out.sharding.device_set),
    }
    return rec, np.asarray(out), np.asarray(single)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def _plain(fn, args) -> Program:
    import jax

    return Program(jax.jit(fn).lower(*args), args, None)


def part(index: int, parts: int) -> tuple[list[str], list[str]]:
    """Child ``index`` of ``parts`` (run side by side): its entries (every ``parts``-th) and its case ids."""
    names = list(ENTRIES)[index::parts]
    cases = [c for c in grid() if c.split("-", 2)[2] in names]
    return names, cases + (list(ERROR_CASES) + ["repro"] if index == 0 else [])


def main(out_path: str, index: int = 0, parts: int = 1) -> None:
    import warnings

    import jax
    import numpy as np

    assert len(jax.devices()) == DEVICES, f"{len(jax.devices())} devices: set the XLA flag"
    warnings.filterwarnings("error", category=UserWarning)  # the op's own warnings (JAX's deprecations pass)
    t0 = time.perf_counter()
    names, cases = part(index, parts)
    records: dict[str, dict] = {}
    arrays: dict[str, np.ndarray] = {}

    def guarded(case_id, fn, *args):
        try:
            return fn(*args)
        except Exception as err:  # recorded; the test of this case reports it
            records[case_id] = {
                "exception": f"{type(err).__name__}: {err}"[:3000],
                "tb": traceback.format_exc()[-4000:],
            }
            return None

    def run(case_id, make):
        """Trace, lower, compile and run one program; record its collectives and keep its result."""
        t = time.perf_counter()
        prog = make()
        compiled = prog.lowered.compile()
        out = compiled(*prog.args)
        rec, host = prog.finish(out) if prog.finish is not None else ({}, np.asarray(out))
        rec["collectives"] = collectives(compiled.as_text())
        rec["seconds"] = round(time.perf_counter() - t, 3)
        records[case_id], arrays[case_id] = rec, host

    runnable = [name for name in names if skip_reason("auto", name) is None]
    for name in set(names) - set(runnable):
        for tag in ("ref", "ref-train"):
            records[f"{tag}-{name}"] = {"skip": skip_reason("auto", name)}
    table = entries(runnable)
    data = {}
    for name, e in table.items():  # standard normal operands, the same whichever child runs the entry
        rng = np.random.default_rng(list(ENTRIES).index(name))
        data[name] = (rng.standard_normal(e.a).astype(np.float32), rng.standard_normal(e.b).astype(np.float32))
    one = jax.devices()[0]
    for name, e in table.items():  # the oracles: unsharded on one device, and lax
        a, b = jax.device_put(data[name], one)
        jobs = [("ref", e.call, (a, b)), ("lax", lax_oracle(e), (a, b))]
        if "train" in parallelisms(name):
            jobs += [("ref-train", jax.grad(loss_of(e.call)), (b, a))]
            jobs += [("lax-train", jax.grad(loss_of(lax_oracle(e))), (b, a))]
        for tag, fn, args in jobs:
            case_id = f"{tag}-{name}"
            guarded(case_id, run, case_id, functools.partial(_plain, fn, args))
    for case_id in cases:
        if case_id in ERROR_CASES:
            reason = skip_reason("explicit", None)
            records[case_id] = {"skip": reason} if reason else guarded(case_id, error_case, case_id)
            continue
        if case_id == "repro":
            got = guarded("repro", repro)
            if got is not None:
                records["repro"], arrays["repro"], arrays["repro-single"] = got
            continue
        mesh_kind, par, name = case_id.split("-", 2)
        reason = skip_reason(mesh_kind, name)
        if reason is not None:
            records[case_id] = {"skip": reason}
            continue
        guarded(case_id, run, case_id, functools.partial(build, mesh_kind, par, table[name], *data[name]))
    np.savez(out_path + ".npz", **arrays)
    with open(out_path + ".json", "w") as fh:
        summary = {"jax": jax.__version__, "seconds": round(time.perf_counter() - t0, 2), "records": records}
        json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], *(int(v) for v in sys.argv[2:4]))
