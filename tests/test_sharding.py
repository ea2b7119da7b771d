"""Many devices: every entry point under JAX's sharding, on 8 host CPU devices.

The grid (``support/sharding_worker.py``: mesh kind x parallelism x entry point, 1-D
to 3-D) runs in two child processes side by side, each with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``: this process keeps its
one device, and a child that XLA CPU aborts cannot take the session with it.
The children run once per session (shared by pytest-xdist's workers) and
report every case; each case is a test here. Each result is compared with
the same entry point on one device, which is compared with ``jax.vjp`` of
``lax.conv_general_dilated``; the compiled HLO is checked for the collectives
the case needs and no others: none in the data-parallel forward or
transposed convolution (``dout`` is never gathered), one all-reduce of the
weight gradient in a training step, one all-reduce of the result where
channels are contracted.

Under ``AxisType.Auto`` XLA's partitioner places the collectives inside the
formulation: the weight gradient is summed in pieces (one per kernel tap), so
there the check is that the all-reduced values add up to one weight and that
nothing is gathered. Cases a JAX version cannot express (explicit axes,
``jax.set_mesh``; Flax for the ``nn`` layers) are skipped with the child's
reason, naming the version.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from .support import assert_close
from .support import sharding_worker as worker

ROOT = pathlib.Path(__file__).resolve().parents[1]
PARTS = 2
# 8 devices, and the session's fast-compile flags (tests/support/xla_flags.py, set by the repository's conftest.py)
XLA_FLAGS = f"--xla_force_host_platform_device_count={worker.DEVICES} {os.environ.get('XLA_FLAGS', '')}".strip()
TOL = dict(rtol=1e-5, scale_atol=1e-5)  # float32, as in the other tests; summing over shards reorders sums


class Results:
    """What the children reported: ``record(case_id)`` and ``array(case_id)``."""

    def __init__(self, folder: pathlib.Path):
        self.records: dict[str, dict] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.versions = set()
        for i in range(PARTS):
            summary = json.loads((folder / f"part{i}.json").read_text())
            self.versions.add(summary["jax"])
            self.records.update(summary["records"])
            with np.load(folder / f"part{i}.npz") as z:
                self.arrays.update({k: z[k] for k in z.files})

    def record(self, case_id: str) -> dict:
        assert case_id in self.records, f"{case_id}: the child reported nothing for this case"
        rec = self.records[case_id]
        if "skip" in rec:
            pytest.skip(rec["skip"])
        if "exception" in rec:
            pytest.fail(f"{case_id} raised in the child: {rec['exception']}\n{rec['tb']}", pytrace=False)
        return rec

    def array(self, case_id: str) -> np.ndarray:
        self.record(case_id)
        return self.arrays[case_id]


def _run_children(folder: pathlib.Path) -> None:
    env = dict(os.environ, XLA_FLAGS=XLA_FLAGS, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    script = worker.__file__  # run as a script: it imports nothing of tests/
    procs = []
    for i in range(PARTS):
        log = open(folder / f"part{i}.log", "w")  # closed once the child exits
        cmd = [sys.executable, script, str(folder / f"part{i}"), str(i), str(PARTS)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    failures = []
    for i, (proc, log) in enumerate(procs):
        try:
            rc = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout (600 s)"
        log.close()
        if rc != 0:
            tail = (folder / f"part{i}.log").read_text()[-3000:]
            failures.append(f"child {i} exited with {rc} (-6 is SIGABRT):\n{tail}")
    if failures:
        (folder / "failed").write_text("\n".join(failures))


@contextlib.contextmanager
def _lock(path: pathlib.Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: xdist workers may each run the children
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def results(tmp_path_factory) -> Results:
    """The children's reports, run once per session: under pytest-xdist the first worker runs them for all."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        folder = tmp_path_factory.mktemp("sharding")
        _run_children(folder)
    else:
        folder = tmp_path_factory.getbasetemp().parent / f"sharding-{run}"
        with _lock(folder.with_suffix(".lock")):
            if not folder.exists():
                folder.mkdir()
                _run_children(folder)
    if (folder / "failed").exists():
        pytest.fail((folder / "failed").read_text(), pytrace=False)
    return Results(folder)


def _elements(shape: str) -> int:
    return math.prod(int(d) for d in re.findall(r"\d+", shape.split("[", 1)[1]))


def _hlo_shape(shape: tuple[int, ...]) -> str:
    return f"f32[{','.join(map(str, shape))}]"


# ---------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", worker.grid())
def test_case(results, case_id):
    """One entry point, mesh kind and parallelism: values, the collectives in the compiled HLO, the sharding."""
    rec = results.record(case_id)
    mesh, par, name = case_id.split("-", 2)
    kind = worker.ENTRIES[name][0]
    want = results.array(f"ref-train-{name}" if par == "train" else f"ref-{name}")
    assert_close(results.arrays[case_id], want, f"{case_id} vs one device", **TOL)

    found = rec["collectives"]
    others = {k: v for k, v in found.items() if k != "all-reduce" and v}
    assert not others, f"{case_id}: collectives beyond all-reduce (an operand gathered or moved): {others}"
    reduces = found["all-reduce"]
    if worker.expected_all_reduces(name, par) == 0:
        assert reduces == [], f"{case_id}: nothing needs summing, yet the HLO has all-reduces {reduces}"
    elif mesh == "auto":  # XLA partitions inside the formulation; the pieces summed must add up to the result
        summed = sum(_elements(s) for instr in reduces for s in instr)
        if par == "channel":  # partial sums of the formulation's intermediates: at least the result's size
            assert reduces and summed >= want.size, f"{case_id}: all-reduces {reduces} for a result of {want.shape}"
        else:
            assert summed == want.size, f"{case_id}: all-reduced {summed} values for a weight gradient of {want.shape}"
    else:
        assert reduces == [[_hlo_shape(want.shape)]], (
            f"{case_id}: expected exactly one all-reduce of the {want.shape} "
            f"{'weight gradient' if par == 'train' or kind == 'filter' else 'result'}, got {reduces}"
        )

    if par == "data" and kind != "filter":
        assert rec["batch_split"] is True, f"{case_id}: the result is not split along its batch axis"
    if "spec" in rec:  # explicit axes: the sharding in the result's type
        assert tuple(rec["spec"]) == worker.expected_result_spec(name, par), f"{case_id}: result type {rec['spec']}"
    if "replicas_agree" in rec:  # pmap: every device holds the same summed result
        assert rec["replicas_agree"], f"{case_id}: the devices' copies of the summed result differ"


@pytest.mark.parametrize(
    "case_id",
    [
        f"{tag}-{name}"
        for name in worker.ENTRIES
        for tag in ("ref", "ref-train")
        if tag == "ref" or "train" in worker.parallelisms(name)
    ],
)
def test_single_device_matches_lax(results, case_id):
    """The oracle of the grid, the unsharded result, against jax.vjp of lax.conv_general_dilated."""
    got = results.array(case_id)
    want = results.array(case_id.replace("ref", "lax", 1))
    assert_close(got, want, f"{case_id} vs lax", **TOL)


def test_issue_repro_returns_a_batch_sharded_result(results):
    """The issue's program on a 4-device mesh of jax.make_mesh's default axes: right, and batch-sharded."""
    rec = results.record("repro")
    assert_close(results.arrays["repro"], results.arrays["repro-single"], "repro vs one device", **TOL)
    assert results.arrays["repro"].shape == (8, 8, 18, 18)
    assert rec["devices"] == 4
    assert rec["batch_split"] is True, "the result is not split along its batch axis over the 4 devices"
    if rec["spec"] is not None:  # a JAX with sharding in types: the result's type says so too
        assert rec["spec"] == ["data", None, None, None], rec


@pytest.mark.parametrize(
    "case_id, says",
    [("explicit-error-spatial", r"spatial axis 0 is sharded"), ("explicit-error-group", r"sharded with group=2")],
)
def test_unsupported_sharding_is_a_clear_error(results, case_id, says):
    """Shardings the op does not split (spatial axes; channels with groups) fail at trace time, saying what to do."""
    rec = results.record(case_id)
    assert rec["raised"] == "ValueError", rec
    assert re.search(says, rec["message"]), rec["message"]
    assert "reshard" in rec["message"] and "shard_map" in rec["message"], rec["message"]


def test_grid_covers_every_rank_and_kind_of_entry_point():
    """The grid's own coverage: every rank for conv_transpose, the nn layers and the transposed convolution."""
    ranks: dict[str, set[int]] = {}
    for name, (kind, rank) in worker.ENTRIES.items():
        family = name.split(".")[0] if "." in name else name.rsplit("_", 1)[0] if name.endswith("d") else name
        ranks.setdefault(family, set()).add(rank)
        ranks.setdefault(kind, set()).add(rank)
    assert ranks["conv_transpose"] == ranks["nn"] == ranks["transpose"] == {1, 2, 3}, ranks
    assert ranks["ops"] == {1, 3} and ranks["forward"] == {1, 3}, ranks  # 2-D: the top-level shells
    assert {"conv2d_backprop_input", "conv2d_backprop_filter"} <= set(ranks), ranks
    ids = worker.grid()
    per_mesh = sum(len(worker.parallelisms(name)) for name in worker.ENTRIES)
    assert len(ids) == len(set(ids)) == len(worker.MESH_KINDS) * per_mesh
