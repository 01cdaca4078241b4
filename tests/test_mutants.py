"""The mutation script itself: a snippet the code no longer holds is reported, never silently skipped."""

from __future__ import annotations

from pathlib import Path

from tests import mutants


def test_a_mutant_whose_snippet_is_gone_is_stale(tmp_path: Path) -> None:
    (tmp_path / mutants.PACKAGE).mkdir(parents=True)
    (tmp_path / mutants.PACKAGE / "x.py").write_text("a = 1\na = 1\n")
    for original in ("b = 2", "a = 1"):  # absent, and present twice
        mutant = mutants.Mutant("m", "x.py", original, "c = 3", ("tests",), "why")
        assert mutants.run_mutant(mutant, tmp_path, timeout=5) == ("STALE", 0.0)
    assert (tmp_path / mutants.PACKAGE / "x.py").read_text() == "a = 1\na = 1\n"


def test_mutants_have_distinct_names_and_name_tests() -> None:
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names)) >= 16
    for mutant in mutants.MUTANTS:
        assert mutant.tests and all(t.startswith("tests/") for t in mutant.tests), mutant.name
        assert mutant.original != mutant.replacement, mutant.name
