"""The report's sections are found, not listed: every module of analyses/report/sections defines SECTION, and
docs/extending.md's toy section, written into a folder on the sections' path, joins them by its figure number."""

from __future__ import annotations

import sys

import pytest

import analyses.report.sections as sections
from analyses import report
from analyses.report.checks import evaluate
from tests.training.test_extending import modules_on_the_page


def test_every_section_module_is_found_once_in_figure_order():
    found = sections.discover()
    assert [s.name for s in found] == report.NAMES
    assert [int(s.figure) for s in found] == sorted(int(s.figure) for s in found)
    assert len({s.name for s in found}) == len(found) == 9


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_section.py").write_text(modules_on_the_page()["toy_section"])
    monkeypatch.setattr(sections, "__path__", [*sections.__path__, str(tmp_path)])
    yield
    sys.modules.pop(f"{sections.__name__}.toy_section", None)


def test_the_pages_toy_section_is_one_module(toy):
    found = sections.discover()
    assert [s.name for s in found] == [*report.NAMES, "toy"]
    (check,) = found[-1].checks
    grokked = {s: {"S_mem": 100, "S_gen": 500, "generalised": 1} for s in range(3)}
    flat = {s: {"S_mem": 100, "S_gen": None, "generalised": 0} for s in range(3)}
    at_once = {s: {"S_mem": 100, "S_gen": 100, "generalised": 1} for s in range(3)}
    assert evaluate(check, grokked)["ok"] is True
    assert evaluate(check, flat)["ok"] is not True
    assert evaluate(check, at_once)["ok"] is not True
