"""The report's sections: one module per section, each defining `SECTION` (an analyses.report.common.SectionDef:
its pre-registered checks, settings per scale and runner). A new section is one module here plus its test; the
report finds it and orders the sections by their figure number."""

from __future__ import annotations

import importlib
import pkgutil

from analyses.report.common import SectionDef


def discover() -> list[SectionDef]:
    found = [importlib.import_module(f"{__name__}.{m.name}").SECTION for m in pkgutil.iter_modules(__path__)]
    return sorted(found, key=lambda s: int(s.figure))


SECTIONS = discover()
