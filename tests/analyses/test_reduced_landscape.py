"""analyses.reduced_landscape's Python API and the JSON its command writes (the command on a teacher-student run
is tested in test_landscape.py)."""

import pytest

import interp
from analyses import reduced_landscape as rl
from analyses.api import options_from
from tests.analyses.golden import check_api_result, check_command, copy_fixture
from training.errors import ConfigError

OPTIONS = rl.ReducedOptions(alphas=(0.5, 1.0, 2.0), steps=20, progress=False)  # the fixture's flags


def test_option_defaults_are_the_commands(tmp_path):
    args = rl.make_parser().parse_args([str(tmp_path)])
    assert options_from(rl.ReducedOptions, args, alphas=None, set=(), progress=True) == rl.ReducedOptions()
    assert len(rl.ReducedOptions().alpha_values()) == 11 and OPTIONS.alpha_values() == [0.5, 1.0, 2.0]
    with pytest.raises(ConfigError, match="--alpha-min"):
        rl.ReducedOptions(alpha_min=3.0, alpha_max=2.0)
    with pytest.raises(ConfigError, match="RUN_DIR or --preset"):
        rl.analyse(None, rl.ReducedOptions())


def test_analyse_returns_the_typed_result_the_command_wrote(tmp_path):
    run = copy_fixture("runs/add", tmp_path)
    res = rl.analyse(interp.load_run(run), OPTIONS)
    assert isinstance(res, rl.ReducedLandscapeResult) and res.alphas == [0.5, 1.0, 2.0] and res.steps == 20
    assert res.source == str(run) and res.trajectory["steps"][-1] == 800
    check_api_result(res, run, "reduced_landscape", "runs/add")


def test_command_writes_the_json_it_wrote_before(tmp_path):
    assert check_command("reduced_landscape", "runs/add", rl.ReducedLandscapeResult, tmp_path, rl.load).w_c > 0
