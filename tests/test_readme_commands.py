"""Every `python -m` command the README shows names a real command whose parser accepts its flags and values, and
every preset or sweep it names exists. Parsing only: nothing is trained or analysed."""

import importlib
import re
import shlex
from pathlib import Path

import pytest

from training.presets import PRESETS
from training.sweeps.spec import SWEEPS

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(text: str) -> list[list[str]]:
    """The project's commands in the README (code blocks and table cells), as argv lists without `python -m`."""
    found = []
    for m in re.finditer(r"python -m ((?:training|analyses)\.[a-z_]+)([^`\n]*)", text):
        args = m.group(2).split("#")[0]
        found.append([m.group(1), *shlex.split(args)])
    return found


def parse(argv: list[str]):
    module = importlib.import_module(argv[0])
    return module.make_parser().parse_args(argv[1:])


COMMANDS = readme_commands(README.read_text())


def test_the_readme_shows_every_command():
    shown = {argv[0] for argv in COMMANDS}
    assert {"training.run", "training.sweep", "analyses.fourier", "analyses.report"} <= shown and len(shown) >= 12


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_a_readme_command_parses_and_names_what_exists(argv):
    args = parse(argv)
    if getattr(args, "preset", None):
        assert args.preset in PRESETS
    if argv[0] == "training.sweep" and args.sweep:
        assert args.sweep in SWEEPS


def test_a_command_with_a_flag_that_does_not_exist_is_refused(capsys):
    (argv,) = readme_commands("python -m analyses.fourier checkpoints/default --no-such-flag 3   # a comment")
    assert argv == ["analyses.fourier", "checkpoints/default", "--no-such-flag", "3"]
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2 and "--no-such-flag" in capsys.readouterr().err
