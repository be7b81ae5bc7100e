"""The JSON every analysis writes, against what the commands wrote before their Python API existed
(tests/analyses/fixtures, made by fixtures/make_fixtures.py from fixed run and sweep directories).

Key order, types, strings, integers and nulls must match exactly. Floats to 1e-4 (relative and absolute): the
fixture runs are fixed inputs, but a probe's float32 sums may round differently on another CPU, which can move a
value rounded to 4 decimals by one unit in its last place; on the machine the fixtures were made on they match
bit for bit. Wall-clock fields (VOLATILE) only need to be numbers.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from tests.analyses.fixtures.make_fixtures import CASES, EXPECTED, HERE, VOLATILE, expected_name, \
    normalise, run_case

TOL = 1e-4


def expected(module: str, source: str) -> tuple[Path, dict[str, Any]]:
    """(path, parsed JSON) of the fixture for `module` on `source` ("runs/add", "sweeps/wd", ...)."""
    (written,) = [w for m, s, _, w in CASES if (m, s) == (module, source)]
    path = EXPECTED / expected_name(module, source, written)
    return path, json.loads(path.read_text())


def argv_of(module: str, source: str) -> list[str]:
    (argv,) = [a for m, s, a, _ in CASES if (m, s) == (module, source)]
    return argv


def copy_fixture(source: str, tmp: Path) -> Path:
    return Path(shutil.copytree(HERE / source, tmp / source.replace("/", "_")))


def command_json(module: str, source: str, tmp: Path) -> dict[str, Any]:
    """What `python -m analyses.<module> <a copy of source> <its argv>` writes, normalised."""
    (written,) = [w for m, s, _, w in CASES if (m, s) == (module, source)]
    return json.loads(run_case(module, source, argv_of(module, source), written, tmp))


def as_written(obj: Any, where: Path) -> dict[str, Any]:
    """A result's `to_dict()` as the command writes it (strict JSON), normalised like the fixtures."""
    from training.cli import json_safe

    return normalise(json.dumps(json_safe(obj), indent=2, allow_nan=False), where)


def assert_matches(got: Any, want: Any, module: str = "", where: str = "$") -> None:
    if where.count(".") == 1 and where.split(".")[1] in VOLATILE.get(module, ()):
        assert isinstance(got, (int, float)) and isinstance(want, (int, float)), where
        return
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {type(got).__name__}, want an object"
        assert list(got) == list(want), f"{where}: keys {list(got)}, want {list(want)}"
        for k in want:
            assert_matches(got[k], want[k], module, f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r:.80}, want {want!r:.80}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_matches(g, w, module, f"{where}[{i}]")
    elif isinstance(want, float):
        assert type(got) is float, f"{where}: {got!r}, want a float"
        assert math.isclose(got, want, rel_tol=TOL, abs_tol=TOL), f"{where}: {got!r}, want {want!r}"
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r}, want {want!r}"


def assert_round_trip(result_cls, module: str, source: str) -> None:
    """from_dict then to_dict gives the fixture back byte for byte (the format is the one written before)."""
    path, d = expected(module, source)
    text = json.dumps(result_cls.from_dict(d).to_dict(), indent=2) + "\n"
    assert text == path.read_text()





def check_api_result(res, where: Path, module: str, source: str) -> None:
    """An `analyse` result: as written, the fixture; from_dict(to_dict()) gives it back; nothing was written."""
    assert_matches(as_written(res.to_dict(), where), expected(module, source)[1], module)
    assert type(res).from_dict(res.to_dict()) == res
    assert not (where / "analyses").exists()  # the API computes; only the command writes


def check_command(module: str, source: str, result_cls, tmp: Path, load=None):
    """The command writes the fixture's JSON, the fixture round-trips byte for byte through `result_cls`, and
    `load` (the module's, default result_cls.load) reads the written file back as a typed result."""
    assert_matches(command_json(module, source, tmp), expected(module, source)[1], module)
    assert_round_trip(result_cls, module, source)
    res = (load or result_cls.load)(tmp / source.replace("/", "_"))
    assert isinstance(res, result_cls)
    return res
