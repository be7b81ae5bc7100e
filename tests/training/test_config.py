import pytest

from training.config import FIELD_SECTION, ConfigError, RunConfig, parse_value, validate
from training.presets import PRESETS, get_preset
from training.run import make_parser


def test_json_round_trip_every_preset():
    for name, cfg in PRESETS.items():
        assert RunConfig.from_json(cfg.to_json()) == cfg, name


def test_replace_routes_flat_fields_to_their_section():
    cfg = RunConfig().replace(lr=3e-3, p=59, d_model=64, steps=10, ckpt_max=9)
    assert (cfg.optim.lr, cfg.task.p, cfg.model.d_model, cfg.train.steps, cfg.ckpt.ckpt_max) == (3e-3, 59, 64, 10, 9)
    with pytest.raises(ConfigError):
        RunConfig().replace(no_such_field=1)


def test_from_dict_rejects_unknown_fields():
    d = RunConfig().to_dict()
    d["optim"]["lrr"] = 1.0
    with pytest.raises(ConfigError, match="lrr"):
        RunConfig.from_dict(d)


def test_every_field_is_a_flag_with_its_default_in_help():
    help_text = make_parser().format_help()
    for name in FIELD_SECTION:
        assert f"--{name.replace('_', '-')}" in help_text


def test_parse_value_types():
    assert parse_value("steps", "1e4") == 10_000
    assert parse_value("lr", "3e-3") == 3e-3
    assert parse_value("float64_loss", "false") is False
    with pytest.raises(ConfigError):
        parse_value("steps", "many")


@pytest.mark.parametrize("flat", [{"frac": 0.0}, {"frac": 1.0}, {"steps": 0}, {"lr": -1.0}, {"dropout": 1.0}])
def test_validate_rejects(flat):
    with pytest.raises(ConfigError):
        validate(RunConfig().replace(**flat))


def test_nanda2023_is_the_canonical_run():
    c = get_preset("nanda2023")
    assert (c.task.task, c.task.p, c.task.frac) == ("add", 113, 0.3)
    m = c.model
    assert (m.model, m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp, m.act_fn, m.normalization_type) == (
        "transformer", 1, 128, 4, 32, 512, "relu", "none")
    assert m.dropout == 0.0 and m.init_scale == 1.0
    o = c.optim
    assert (o.optimizer, o.lr, o.wd, o.beta1, o.beta2, o.warmup_steps, o.batch_size, o.float64_loss) == (
        "adamw", 1e-3, 1.0, 0.9, 0.98, 10, 0, True)
    assert c.train.steps == 40_000


def test_power2022_preset():
    c = get_preset("power2022")
    assert (c.task.p, c.task.frac, c.model.n_layers, c.optim.batch_size, c.train.steps) == (97, 0.5, 2, 512, 100_000)


def test_every_preset_is_in_a_presets_table_of_the_docs():
    """A preset is documented where a reader looks for it: a table row of the README or a docs page naming it in
    backticks (`name` or `--preset name`)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    rows = [line for f in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
            for line in f.read_text().splitlines() if line.startswith("|")]
    missing = [n for n in PRESETS if not any(re.search(rf"`(--preset )?{re.escape(n)}`", r) for r in rows)]
    assert not missing, f"presets in no docs table: {missing}"
