"""The deliberate breakages of ``make mutants`` still apply to the current source (cheap check)."""

import pytest

from tests.mutants import MUTANTS, REPO, check_applies

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_applies_and_names_existing_tests(mutant):
    assert check_applies(mutant) != (REPO / mutant.path).read_text()
    for node in mutant.tests:
        path, _, name = node.partition("::")
        assert (REPO / path).is_file(), node
        assert not name or f"def {name}(" in (REPO / path).read_text(), node
