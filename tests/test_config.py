"""Recipes: inheritance, overrides, validation and round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lafslib.config import (
    ConfigError,
    FinetuneConfig,
    PretrainConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_recipe,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def base_recipe(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "base.yaml",
        {
            "task": "pretrain",
            "data": {"train": "synthetic", "batch_size": 8},
            "model": {"name": "vit_test", "kwargs": {"depth": 2}},
            "optim": {"epochs": 3, "lr": 0.001},
        },
    )


def test_defaults_and_values(base_recipe: Path) -> None:
    cfg = load_recipe(base_recipe)
    assert isinstance(cfg, PretrainConfig)
    assert cfg.data.batch_size == 8
    assert cfg.optim.epochs == 3
    assert cfg.optim.momentum_teacher == 0.996  # default kept
    assert cfg.model.kwargs == {"depth": 2}


def test_base_inheritance_deep_merges(tmp_path: Path, base_recipe: Path) -> None:
    child = _write(
        tmp_path / "child.yaml",
        {"base": "base.yaml", "optim": {"lr": 0.01}, "model": {"kwargs": {"heads": 2}}},
    )
    cfg = load_recipe(child)
    assert cfg.optim.lr == 0.01
    assert cfg.optim.epochs == 3  # inherited from the base
    assert cfg.data.train == "synthetic"
    # model kwargs are replaced as a whole, not merged key by key
    assert cfg.model.kwargs == {"heads": 2}


def test_set_overrides_are_coerced(base_recipe: Path) -> None:
    cfg = load_recipe(
        base_recipe,
        ["optim.lr=1e-4", "optim.epochs=7", "run.precision=bf16", "eval.bins=[a.bin, b.bin]"],
    )
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.epochs == 7 and isinstance(cfg.optim.epochs, int)
    assert cfg.run.precision == "bf16"
    assert cfg.eval.bins == ["a.bin", "b.bin"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown key 'optim.lrr'"),
        ("optim.epochs=abc", "key 'optim.epochs' expects an integer"),
        ("run.precision=fp8", "key 'run.precision' must be one of"),
        ("run.deterministic=maybe", "key 'run.deterministic' expects true/false"),
        ("views.global_scale=0.4", "key 'views.global_scale' expects a list"),
        ("nonsense", "--set expects key=value"),
    ],
)
def test_bad_values_name_key_and_file(base_recipe: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_recipe(base_recipe, [override])
    assert message in str(err.value)
    if override != "nonsense":
        assert str(base_recipe) in str(err.value)


def test_missing_required_and_unknown_top_level(tmp_path: Path) -> None:
    missing = _write(tmp_path / "m.yaml", {"task": "pretrain", "model": {"name": "vit_test"}})
    with pytest.raises(ConfigError, match=r"m\.yaml: missing required key 'data\.train'"):
        load_recipe(missing)
    bad = _write(tmp_path / "u.yaml", {"task": "finetune", "oops": 1})
    with pytest.raises(ConfigError, match=r"u\.yaml: unknown key 'oops'"):
        load_recipe(bad)
    notask = _write(tmp_path / "n.yaml", {"data": {"train": "x"}})
    with pytest.raises(ConfigError, match="missing required key 'task'"):
        load_recipe(notask)


def test_circular_base_is_reported(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", {"base": "b.yaml", "task": "pretrain"})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="circular"):
        load_recipe(tmp_path / "a.yaml")


def test_dumped_config_is_a_valid_recipe(tmp_path: Path, base_recipe: Path) -> None:
    cfg = load_recipe(base_recipe, ["optim.lr=0.5", "run.max_steps=3"])
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    again = load_recipe(out)
    assert config_to_dict(again) == config_to_dict(cfg)


def test_finetune_root() -> None:
    cfg = config_from_dict(
        {"task": "finetune", "data": {"train": "x"}, "model": {"name": "iresnet_test"}}
    )
    assert isinstance(cfg, FinetuneConfig)
    assert cfg.loss.name == "arcface" and cfg.loss.scale == 64.0


def test_every_shipped_recipe_loads() -> None:
    recipes = sorted(RECIPES.rglob("*.yaml"))
    for path in recipes:
        cfg = load_recipe(path)
        assert cfg.task in ("pretrain", "finetune"), path


@pytest.mark.parametrize(
    ("task", "key", "value"),
    [
        ("pretrain", "run.checkpoint_every", 0),
        ("pretrain", "run.log_every", 0),
        ("pretrain", "run.keep_last", 0),
        ("pretrain", "run.max_steps", 0),
        ("pretrain", "data.batch_size", 0),
        ("pretrain", "optim.accumulate", 0),
        ("pretrain", "optim.momentum_teacher", 1.5),
        ("pretrain", "views.global_scale", [0.9, 0.4]),
        ("pretrain", "loss.teacher_temp", 0),
        ("finetune", "data.batch_size", -1),
        ("finetune", "optim.accumulate", 0),
        ("finetune", "optim.lr", 0),
        ("finetune", "optim.mixup_prob", 2),
        ("finetune", "data.identity_fraction", 0),
        ("finetune", "loss.partial_fc_rate", 1.5),
    ],
)
def test_values_out_of_range_name_the_key_and_file(
    tmp_path: Path, task: str, key: str, value: object
) -> None:
    section, name = key.split(".")
    recipe = _write(
        tmp_path / "r.yaml",
        {"task": task, "data": {"train": "synthetic"}, "model": {"name": "vit_test"},
         section: {name: value}} if section != "data" else
        {"task": task, "data": {"train": "synthetic", name: value}, "model": {"name": "vit_test"}},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=rf"r\.yaml: key '{key}' must be") as exc:
        load_recipe(recipe)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=rf"key '{key}'"):  # --set is checked the same way
        ok = {"task": task, "data": {"train": "synthetic"}, "model": {"name": "vit_test"}}
        load_recipe(_write(tmp_path / "ok.yaml", ok), [f"{key}={value}"])
