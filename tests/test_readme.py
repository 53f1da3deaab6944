"""The README's tour runs as written (keeps the README true)."""

import doctest
import importlib
import re
from pathlib import Path

import jax
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python block"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})


# The docstring examples of a few quick modules, run as a user runs them (JAX's default float32;
# the suite switches float64 on). The other modules' examples run with
# ``python -m pytest --doctest-modules jaxopt_mml`` (about a minute: too slow for CI).
@pytest.mark.parametrize("name", ["_status", "_roots_bracket", "_roots_fixed_point"])
def test_docstring_examples_run(name):
    module = importlib.import_module(f"jaxopt_mml.{name}")
    with jax.enable_x64(False):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"jaxopt_mml.{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} docstring example(s) of jaxopt_mml.{name} failed"


def test_docstring_examples_show_no_dtype():
    # An example that shows an array's repr (dtype=float32) prints something else for a user
    # with x64 on (dtype=float64): hessian, hvp, directional_derivative, linearise and
    # quadratic_model did. Examples print values (print(...), .tolist(), float(...)) instead.
    import jaxopt_mml as mml

    shown = []
    for name in mml.__all__:
        for test in doctest.DocTestFinder().find(getattr(mml, name), name, globs={}):
            shown += [f"{name}: {ex.want}" for ex in test.examples if "dtype=float" in ex.want]
    assert not shown, shown
