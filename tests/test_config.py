"""Every YAML under conf/ composes; unknown keys fail with a clear message."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import ganlab.config  # noqa: F401  (registers resolvers)
from conftest import REPO

CONF = REPO / "conf"
PRIMARY = ("train", "generate", "evaluate", "augment", "audit")
# groups whose options are composed into train.yaml one at a time (others are checked by their owners)
SKIP_GROUPS = {"hydra"}


def group_options() -> list[tuple[str, str]]:
    options = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if len(rel.parts) == 1 or rel.parts[0] in SKIP_GROUPS:
            continue
        group = "/".join(rel.parts[:-1])
        options.append((group, path.stem))
    return options


def test_conf_has_the_expected_groups():
    groups = {g for g, _ in group_options()}
    assert {"data", "model", "model/loss", "trainer", "logger", "callbacks"} <= groups


@pytest.mark.parametrize("group,option", group_options(), ids=lambda v: str(v))
def test_every_group_option_composes_into_train(group, option):
    override = f"{group}={option}"
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[override], return_hydra_config=True)
    assert cfg is not None
    top = group.split("/")[0]
    if top in ("data", "model", "trainer", "logger"):
        assert top in cfg


@pytest.mark.parametrize("name", [p for p in PRIMARY if (CONF / f"{p}.yaml").exists()])
def test_primary_configs_compose(name):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(name, return_hydra_config=True)
    assert len(cfg) > 0


@pytest.mark.parametrize("model", ["gan", "dcgan", "cdcgan"])
def test_model_configs_instantiate_with_numbers_from_data(model):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "data.image_size=32", "data.channels=3"])
    module = instantiate(cfg.model)
    images = module.sample(2)
    assert images.shape == (2, 3, 32, 32)
    assert module.num_classes == (cfg.data.num_classes if model == "cdcgan" else 0)


def test_unknown_key_is_a_clear_error(run_cli):
    result = run_cli("ganlab.train", "trainer.max_epoch=3")
    assert result.returncode != 0
    assert "max_epoch" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_group_option_is_a_clear_error(run_cli):
    result = run_cli("ganlab.train", "model=stylegan9")
    assert result.returncode != 0
    assert "stylegan9" in result.stderr
    assert "Traceback" not in result.stderr
