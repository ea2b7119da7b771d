"""The API reference covers the public API, and every public name comes with an example.

For each name of ``jax_conv_bpi.__all__``, ``jax_conv_bpi.ops.__all__`` and
``jax_conv_bpi.nn.__all__``:

* its docstring (a module's: its module docstring) holds a ``>>>`` example,
  which ``make test`` runs (``--doctest-modules``); the few names that cannot
  carry a docstring of their own (a tuple, primitives that are instances of one
  class) have theirs in their entry of ``docs/api.md`` instead, listed below;
* ``docs/api.md`` has exactly one entry for it (an autodoc directive or a
  ``py:`` directive), and no entry names anything else.

The pages' examples (``docs/*.md``) are doctested by ``make test`` like the
README's; ``make docs`` builds the site with warnings as errors.
"""

from __future__ import annotations

import collections
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

import jax_conv_bpi

DOCS = Path(__file__).resolve().parents[1] / "docs"
API_PAGE = DOCS / "api.md"

# Names whose example lives in their docs/api.md entry instead of a docstring of their own. Empty a
# line when the object gets its own docstring with an example (the test then asks for it).
EXAMPLE_ON_THE_API_PAGE = {
    "jax_conv_bpi.CPU_PATHS",  # a tuple: no docstring of its own
    "jax_conv_bpi.conv_p",  # the three primitives (and conv_p's 2-D alias) share their class's docstring
    "jax_conv_bpi.conv2d_p",
    "jax_conv_bpi.backprop_input_p",
    "jax_conv_bpi.backprop_filter_p",
}

# An entry of docs/api.md: ".. autofunction:: name" (inside an eval-rst fence) or "```{py:data} name".
ENTRY = re.compile(r"^(?:\.\. (auto\w+|py:\w+):: |```\{(py:\w+|auto\w+)\} )(\S+)", re.MULTILINE)


def public_modules() -> list[ModuleType]:
    pytest.importorskip("flax", reason="jax_conv_bpi.nn needs the nn extra: pip install -e '.[nn]'")
    from jax_conv_bpi import nn, ops

    return [jax_conv_bpi, ops, nn]


def public_names() -> dict[str, object]:
    """Every public name, fully qualified, with its object."""
    return {f"{m.__name__}.{name}": getattr(m, name) for m in public_modules() for name in m.__all__}


def documented_name(full_name: str, obj: object) -> str:
    """The name its API entry carries: a module is documented under its own name (``jax_conv_bpi.ops``)."""
    return obj.__name__ if inspect.ismodule(obj) else full_name


def api_entries() -> dict[str, str]:
    """Each entry of docs/api.md: its name and its text (up to the next entry)."""
    text = API_PAGE.read_text()
    matches = list(ENTRY.finditer(text))
    names = [m.group(3) for m in matches]
    duplicates = [name for name, n in collections.Counter(names).items() if n > 1]
    assert not duplicates, f"docs/api.md documents these more than once: {duplicates}"
    ends = [m.start() for m in matches[1:]] + [len(text)]
    return {m.group(3): text[m.start() : end] for m, end in zip(matches, ends, strict=True)}


def test_every_public_name_has_one_api_entry_and_nothing_else_has_one():
    expected = {documented_name(name, obj) for name, obj in public_names().items()}
    expected |= {m.__name__ for m in public_modules()}  # each module's section: its docstring
    entries = set(api_entries())
    assert not expected - entries, f"public names without an entry in docs/api.md: {sorted(expected - entries)}"
    assert not entries - expected, f"docs/api.md entries for names outside __all__: {sorted(entries - expected)}"


@pytest.mark.parametrize("full_name", sorted(public_names()))
def test_every_public_name_has_an_example(full_name):
    obj = public_names()[full_name]
    doc = inspect.getdoc(obj) or ""
    if full_name in EXAMPLE_ON_THE_API_PAGE:
        assert ">>>" not in doc, f"{full_name} has a docstring example now: remove it from EXAMPLE_ON_THE_API_PAGE"
        entry = api_entries()[full_name]
        assert ">>>" in entry, f"{full_name}: its docs/api.md entry has no >>> example"
        return
    assert ">>>" in doc, f"{full_name}: its docstring has no >>> example (or list it in EXAMPLE_ON_THE_API_PAGE)"


def test_the_pages_examples_are_doctests_that_pytest_can_read():
    """A ``>>>`` example on a page ends with a blank line before its closing fence (else the fence is output)."""
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text().splitlines()
        in_example = False
        for number, line in enumerate(lines, 1):
            if line.startswith(">>>"):
                in_example = True
            elif line.startswith("```") and in_example:
                assert lines[number - 2] == "", f"{page.name}:{number}: no blank line before the closing fence"
                in_example = False
