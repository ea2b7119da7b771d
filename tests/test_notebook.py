"""Execute each notebook top to bottom; any cell error fails the test.

The notebooks are ``explore_conv2d_backprop_input`` (the op) and
``port_mindspore_model`` (a MindSpore network and its checkpoint, which needs
the golden set and the ``nn`` extra). Each lives in jupytext percent format (``notebooks/*.py``). It is
converted with jupytext and run by nbclient in a ``python3`` kernel of this
interpreter, inside a temporary folder, with every place a kernel or matplotlib
would write to (IPython history, Jupyter runtime files, matplotlib's cache)
redirected there. The notebook asserts its own results (against the op's
definition, ``jax.vjp`` of ``lax.conv_general_dilated`` and finite differences),
so a wrong number is a cell error too.

Skipped, with the reason, only when the ``notebook`` extra is not installed
(and, for the porting notebook, the ``nn`` extra or the golden set).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

from .support import GOLDEN_DIR, GOLDEN_MISSING, golden_available

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 120.0  # a whole execution, kernel start included


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:  # a dotted name whose parent is absent
        return True


_NN_MISSING = [name for name in ("flax", "optax", "google.protobuf", "safetensors") if _missing(name)]
# name: (code cells at least, pictures at least, why it cannot run here or None)
NOTEBOOKS = {
    "explore_conv2d_backprop_input": (8, 4, None),
    "port_mindspore_model": (
        7,
        2,
        f"the nn extra is not installed (missing {', '.join(_NN_MISSING)}): pip install -e '.[nn]'"
        if _NN_MISSING
        else None
        if golden_available()
        else GOLDEN_MISSING,
    ),
}

_EXTRA = ("nbclient", "nbformat", "jupytext", "ipykernel", "matplotlib")
_MISSING = [name for name in _EXTRA if _missing(name)]

pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"the notebook extra is not installed (missing {', '.join(_MISSING)}): pip install -e '.[notebook]'",
)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Run the kernel in ``tmp_path`` with every write it would make kept there."""
    monkeypatch.chdir(tmp_path)
    for var in ("IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "MPLCONFIGDIR"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.delenv("JCB_NOTEBOOK_FIGURES", raising=False)  # pictures are shown, never saved
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("JCB_GOLDEN_DIR", str(GOLDEN_DIR))
    return tmp_path


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_executes_top_to_bottom(sandbox, name):
    min_cells, min_images, unavailable = NOTEBOOKS[name]
    if unavailable:
        pytest.skip(unavailable)
    import jupytext
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    # "python3" must resolve to this interpreter (ipykernel's native kernel), not another Python.
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert (
        spec.argv[0] in {sys.executable, "python", "python3"}
        or Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
    ), f"kernel python3 runs {spec.argv[0]}, not {sys.executable}"

    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert len(code_cells) >= min_cells, "the notebook lost its cells"

    deadline = time.monotonic() + BUDGET_S
    client = NotebookClient(
        nb,
        kernel_name="python3",
        startup_timeout=60,
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        resources={"metadata": {"path": str(sandbox)}},
        allow_errors=False,
    )
    start = time.monotonic()
    client.execute()  # raises CellExecutionError on any cell error, CellTimeoutError past the budget
    print(f"notebook {name} executed in {time.monotonic() - start:.1f} s")

    # Every code cell ran, and the cells that draw produced pictures.
    assert all(cell.get("execution_count") for cell in code_cells)
    images = sum(1 for cell in code_cells for output in cell.outputs if "image/png" in output.get("data", {}))
    assert images >= min_images, f"expected at least {min_images} pictures, got {images}"
    assert not list(sandbox.glob("*.png")), "the notebook wrote pictures although JCB_NOTEBOOK_FIGURES is unset"
