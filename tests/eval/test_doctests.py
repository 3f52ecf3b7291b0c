"""The examples in the docstrings of the eval modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["arrcoc_steer.control", "arrcoc_steer.eval.policies", "arrcoc_steer.eval.conditions",
           "arrcoc_steer.eval.rollout", "arrcoc_steer.eval.metrics", "arrcoc_steer.eval.stats"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
