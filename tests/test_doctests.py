"""Every module of minnet and optim runs its docstring examples: an example that no longer
matches the code fails here with the module's name and doctest's report."""
import doctest
import importlib
import io
import pkgutil

import pytest

import minnet
import optim

# Extras that a module may import at load time; without them its examples cannot run.
OPTIONAL = {"torch", "onnx", "onnxruntime", "dask", "distributed", "matplotlib"}


def _module_names():
    for package in (minnet, optim):
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith(".__main__"):  # importing the CLI entry point runs it
                yield info.name


MODULES = sorted(_module_names())


def test_every_package_is_walked():
    """The walk reaches the leaf modules of both packages (a broken walk would test nothing)."""
    assert {"minnet.tensor", "optim.quant.affine", "optim.graph.ops"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {error.name}")
        raise
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"doctests of {name} fail:\n{report.getvalue()}"
