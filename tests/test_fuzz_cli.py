"""Property-based fuzzing of every command's flags (hypothesis).

argv is drawn from the real parsers' flags, with hostile values (nan, inf, huge, negative, empty, garbage,
control characters, odd paths) and RUN_DIRs that are missing, empty, a file, garbage or damaged runs, or a tiny
good run. The invariant: exit 0, or exit 2 with exactly one line on stderr, no traceback (any exception escaping
`main` fails the test), and nothing created or changed on exit 2.

Kept fast without depending on speed: the training loop is replaced by a stub (an accepted training.run input
stops where the loop would start), analyses that train get `--steps 2`, the memory limit is 256 MiB, and the
examples are few and derandomised (the same inputs every run).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from analyses import cosets, explore, fourier, landscape, reduced_landscape, sequence, sparsity  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from training import run as training_run  # noqa: E402

MODULES = {"training.run": training_run, "analyses.fourier": fourier, "analyses.cosets": cosets,
           "analyses.sparsity": sparsity, "analyses.landscape": landscape,
           "analyses.reduced_landscape": reduced_landscape, "analyses.sequence": sequence, "analyses.explore": explore}
HOSTILE = ["nan", "NaN", "inf", "-inf", "1e400", "-1e400", "-1", "0", "1", "2", "0.5", "1.5", "-0", "1e-400", "",
           " ", "abc", "9" * 30, str(2**63), str(2**64), str(-(2**63) - 1), "1e18", "0x10", "1_0", "[", "(",
           "x\ny", "\x00", "S99999999", "x/y", "W_U|b_U", "(0 1)", "/proc/self/mem", "/dev/null", "/", "..",
           "true", "LN", "mlp", "cuda"]
RUN_DIRS = ["missing", "empty", "file", "garbage_config", "garbage_summary", "nan_weights", "good"]


class Accepted(Exception):
    """Raised by the stub training loop: the input passed every check and training would start."""


def _flags(parser) -> list[tuple[str, bool]]:
    """(flag, takes a value) for every optional flag of a real parser (help excluded)."""
    out = []
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                out.append((flag, action.nargs != 0))
    return out


def argv_for(command: str):
    flags = _flags(MODULES[command].make_parser())
    value = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=6))
    pair = st.tuples(st.sampled_from(flags), value).map(lambda fv: [fv[0][0], fv[1]] if fv[0][1] else [fv[0][0]])
    return st.tuples(st.sampled_from(RUN_DIRS), st.lists(pair, max_size=4))


def _make_run_dirs(root: Path, good: Path) -> None:
    (root / "empty").mkdir()
    (root / "file").write_text("not a run")
    (root / "garbage_config").mkdir()
    (root / "garbage_config" / "config.json").write_text('{"task": {')
    shutil.copytree(good, root / "garbage_summary")
    (root / "garbage_summary" / "summary.json").write_text("[1, 2]")
    shutil.copytree(good, root / "nan_weights")
    from safetensors.torch import load_file, save_file

    for ckpt in (root / "nan_weights" / "ckpt").iterdir():
        w = load_file(ckpt)
        w[next(iter(w))][:] = float("nan")
        save_file(w, ckpt)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from training.loop import train

    root = tmp_path_factory.mktemp("fuzz")
    train(tiny_config(steps=10, eval_every=5, ckpt_floor=2, ckpt_max=4), root / "good", progress=False)
    _make_run_dirs(root, root / "good")
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def call(module, argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = module.main(argv)
        except SystemExit as e:  # argparse exits from inside parse_args
            code = e.code
        except Accepted:
            code = 0
    return code, err.getvalue()


@pytest.fixture
def fuzz_env(workdir, monkeypatch):
    import training.loop

    def stub_train(*args, **kwargs):
        raise Accepted

    monkeypatch.setattr(training.loop, "train", stub_train)
    monkeypatch.setenv("GROKSCOPE_MEMORY_LIMIT", "256M")
    monkeypatch.chdir(workdir)  # relative outputs (checkpoints/<preset>) land inside the snapshot
    return workdir


@pytest.mark.parametrize("command", list(MODULES))
def test_hostile_argv_is_exit_0_or_one_line_exit_2_and_changes_nothing(command, fuzz_env):
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(argv_for(command))
    def check(drawn):
        run_dir, pairs = drawn
        argv = [] if command == "training.run" else [str(fuzz_env / run_dir)]
        for pair in pairs:
            argv += pair
        argv += {"training.run": ["--no-progress"], "analyses.sparsity": ["--no-tsne", "--no-progress"],
                 "analyses.reduced_landscape": ["--steps", "2", "--no-progress"]}.get(command, ["--no-progress"])
        before = snapshot(fuzz_env)
        code, err = call(MODULES[command], argv)
        assert code in (0, 2), (argv, code, err)
        if code == 2:
            assert len(err.splitlines()) == 1 and err.endswith("\n"), (argv, err)
            assert "Traceback" not in err
            assert snapshot(fuzz_env) == before, argv

    check()
