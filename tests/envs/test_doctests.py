"""The `>>>` examples in the envs docstrings run."""

import doctest
import importlib

import pytest

MODULES = ["envs", "envs.modifiers", "envs.expert", "envs.dataset", "envs.demo"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
