"""The native kernels under each instruction set that ``JCB_NATIVE_ISA`` can force.

The library compiles its hot loops for AVX-512, AVX2 and no SIMD target (``native/src/isa.h``) and
runs the CPU's best unless ``JCB_NATIVE_ISA=avx512|avx2|generic`` asks for another. In a child
process per instruction set this CPU runs:

* ``native_status()`` names the forced instruction set and says it was forced, and the dispatcher's
  rules (``rules.isa``) agree with the library: the direct AVX-512 kernels only under ``avx512``;
* a representative set of kernels matches the float64 references: the forward convolution, the
  input gradient (the forward's flipped correlation) and the weight gradient, on stride-1 layers
  (direct under AVX-512, im2col otherwise), strided ones (im2col) and grouped ones (the plane
  loops), 1-D to 3-D.

And a value that is not an instruction set, or one the CPU lacks, is refused with a warning and a
reason in ``native_status()``; the kernels then run the CPU's best. The whole native test file
under ``generic`` is ``make test-native-isa``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jax_conv_bpi._src.native import kernels, rules

from .support import assert_close, geometry_nd, random_arrays, ref_conv, ref_filter, ref_input_grad, requires_cpu

pytestmark = [
    requires_cpu,
    pytest.mark.skipif(not kernels.load()[0], reason=f"native kernel off here: {kernels.load()[1]}"),
]

ROOT = Path(__file__).resolve().parents[1]

# (kernel, role, geometry): role as test_native's (forward: x, w; input_grad: dout, w; filter: dout, x).
_G = geometry_nd
CASES = {
    "direct_forward_2d": ("forward", "forward", _G(2, 6, 27, (7, 40), 3, padding=1)),
    "direct_forward_3d": ("forward", "forward", _G(2, 5, 9, (4, 5, 24), 3, dilation=(1, 2, 1), padding=1)),
    "direct_input_grad_1d": ("input_grad", "input_grad", _G(2, 8, 12, (120,), 5, padding=2)),
    "direct_filter_2d": ("filter", "filter", _G(2, 33, 7, (14, 30), 3, dilation=2, padding=((2, 1), (3, -1)))),
    "direct_filter_3d": ("filter", "filter", _G(2, 20, 9, (5, 6, 24), 3, padding=1)),
    "im2col_forward_2d_s2": ("forward", "forward", _G(3, 5, 6, (12, 10), 4, stride=2, padding=1)),
    "im2col_filter_1d_s3": ("filter", "filter", _G(2, 4, 5, (50,), 5, stride=3, padding=((2, 0),))),
    "im2col_filter_3d_s2": ("filter", "filter", _G(2, 3, 4, (6, 8, 9), 3, stride=2, padding=1)),
    "grouped_forward_2d": ("grouped_forward", "forward", _G(3, 6, 6, (13, 12), 3, stride=2, padding=1, group=6)),
    "grouped_forward_1d": ("grouped_forward", "forward", _G(2, 4, 8, (37,), 3, dilation=2, padding=2, group=4)),
    "grouped_filter_2d": ("grouped_filter", "filter", _G(2, 4, 8, (9, 17), 3, padding=((2, 1), (2, 2)), group=4)),
    "grouped_filter_3d": ("grouped_filter", "filter", _G(2, 6, 6, (4, 6, 19), 3, padding=1, group=6)),
}
_SHAPES = {"forward": lambda g: (g.x_shape, g.w_shape), "input_grad": lambda g: (g.y_shape, g.w_shape),
           "filter": lambda g: (g.y_shape, g.x_shape)}  # fmt: skip
_REFERENCES = {"forward": ref_conv, "input_grad": ref_input_grad, "filter": ref_filter}


def _operands(cid: str):
    _, role, g = CASES[cid]
    return random_arrays(sorted(CASES).index(cid), *_SHAPES[role](g), dtype=np.float32)


# Runs in the child: every case in one jitted program, the results to the file argv[1].
_CHILD = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("always")
    import jax, numpy as np
    import jax_conv_bpi as jcb
    from jax_conv_bpi._src.lowering import cpu_input_grad
    from jax_conv_bpi._src.native import kernels, rules
    from tests.test_native_isa import CASES, _operands

    status = jcb.native_status()
    run = {
        "forward": kernels.conv_forward,
        "input_grad": cpu_input_grad.backprop_input_native,
        "filter": kernels.conv_weight_grad,
        "grouped_forward": kernels.grouped_forward,
        "grouped_filter": kernels.grouped_weight_grad,
    }
    data = {cid: _operands(cid) for cid in CASES}
    program = jax.jit(lambda args: {cid: run[CASES[cid][0]](a, b, geom=CASES[cid][2]) for cid, (a, b) in args.items()})
    np.savez(sys.argv[1], **jax.device_get(program(data)))
    direct = {
        cid: kernels.direct(g, "forward" if k in ("forward", "input_grad") else "weight_grad")
        for cid, (k, _, g) in CASES.items() if cid.startswith("direct")
    }
    rules_direct = {
        cid: rules.direct(g, "forward" if k in ("forward", "input_grad") else "weight_grad")
        for cid, (k, _, g) in CASES.items() if cid.startswith("direct")
    }
    json.dump({"status": status, "library_isa": kernels._loaded["isa"], "rules_isa": rules.isa().isa,
               "direct": direct, "rules_direct": rules_direct}, sys.stdout)
    """
)


def _child(isa: str, code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != rules.ISA_VARIABLE}
    env.update(JAX_PLATFORMS="cpu", **{rules.ISA_VARIABLE: isa})
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )


@pytest.mark.parametrize("isa", rules.ISAS)
def test_kernels_under_a_forced_instruction_set(isa, tmp_path):
    if rules.ISAS.index(isa) < rules.ISAS.index(rules.cpu_isa()):
        pytest.skip(f"this CPU runs at most {rules.cpu_isa()}")
    proc = _child(isa, _CHILD, str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert "RuntimeWarning" not in proc.stderr, proc.stderr[-3000:]
    assert out["library_isa"] == out["rules_isa"] == isa, out
    assert f"forced by {rules.ISA_VARIABLE}={isa} " in out["status"], out["status"]
    assert ("runs AVX-512" in out["status"]) == (isa == "avx512"), out["status"]
    # The direct kernels (AVX-512 only), as the library and the dispatcher's rules see them.
    assert out["direct"] == out["rules_direct"] == dict.fromkeys(out["direct"], isa == "avx512"), out
    results = np.load(tmp_path / "out.npz")
    for cid, (_, role, g) in CASES.items():
        a, b = (np.asarray(v, np.float64) for v in _operands(cid))
        assert_close(results[cid], _REFERENCES[role](g, a, b), f"{cid} under {isa}", scale_atol=2e-5)


_STATUS = "import jax_conv_bpi as jcb, warnings; warnings.simplefilter('always'); print(jcb.native_status())"


@pytest.mark.parametrize("value", ["avx3", "AVX2", "sse"])
def test_an_unknown_instruction_set_is_refused(value):
    proc = _child(value, _STATUS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    why = f"{rules.ISA_VARIABLE}={value!r} is not one of avx512, avx2, generic"
    assert f"RuntimeWarning: jax_conv_bpi: {why}; the native kernels run {rules.cpu_isa()}" in proc.stderr
    assert proc.stderr.count("RuntimeWarning") == 1, proc.stderr
    assert f"{why}, so the CPU's best, by CPU detection)" in proc.stdout, proc.stdout


def test_an_instruction_set_beyond_the_cpu_is_refused():
    beyond = [isa for isa in rules.ISAS if rules.ISAS.index(isa) < rules.ISAS.index(rules.cpu_isa())]
    if not beyond:
        pytest.skip("this CPU runs every instruction set the kernels are compiled for")
    proc = _child(beyond[0], _STATUS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    why = f"{rules.ISA_VARIABLE}={beyond[0]} refused: this CPU runs at most {rules.cpu_isa()}"
    assert why in proc.stderr and f"{why}, so the CPU's best" in proc.stdout, (proc.stdout, proc.stderr)


def test_the_rules_follow_the_variable(monkeypatch):
    """``rules.isa`` (read once per process, hence the cache cleared here) and ``has_avx512`` honour the variable."""
    cpu = rules.cpu_isa()
    try:
        for value, expect in [("", cpu), ("generic", "generic"), ("bogus", cpu), ("avx512", "avx512")]:
            monkeypatch.setenv(rules.ISA_VARIABLE, value)
            rules.isa.cache_clear()
            if value == "avx512" and cpu != "avx512":
                expect = cpu
            assert rules.isa().isa == expect, (value, rules.isa())
            assert rules.has_avx512() == (expect == "avx512")
            assert (rules.isa().refused is None) == (value in ("", "generic") or value == expect)
    finally:
        monkeypatch.undo()
        rules.isa.cache_clear()
