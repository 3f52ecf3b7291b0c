"""Fixtures for the eval tests: the scripted expert as the reference policy, a concept file."""

from __future__ import annotations

import pytest

from arrcoc_steer.eval import ExpertPolicy

FAST_TASKS = ["LiftRedBlock", "PushRedBlockToZone"]  # short expert episodes (~15-40 steps)


@pytest.fixture
def expert():
    return ExpertPolicy()


@pytest.fixture(scope="session")
def concepts_file(tmp_path_factory):
    """A concept dictionary for MiniLM's layout (6 layers x 1536 neurons)."""
    from arrcoc_steer.concepts import ConceptSet, ModelRef, save_concepts

    ref = ModelRef("bert", 6, 1536)
    path = tmp_path_factory.mktemp("concepts") / "concepts.yaml"
    save_concepts(path, [
        ConceptSet("fast", ((2, 10), (3, 20), (3, 21)), clusters=((0,), (1, 2)), model=ref),
        ConceptSet("slow", ((3, 5),), model=ref),
    ])  # fmt: skip
    return str(path)
