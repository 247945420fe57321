"""Every YAML under conf/ composes, data YAMLs share a base, mistyped numbers are named.
(Unknown keys and group options: the bad-input matrix, tests/test_bad_input.py.)"""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ganlab.config import check_argument_types  # also registers the resolvers
from ganlab.errors import GanlabError
from conftest import REPO

CONF = REPO / "conf"
PRIMARY = ("train", "generate", "evaluate", "augment", "audit")
# groups whose options are composed into train.yaml one at a time (others are checked by their owners)
SKIP_GROUPS = {"hydra", "test_data"}  # test_data: augment's group (test_augment_test_data_options_compose)


def group_options() -> list[tuple[str, str]]:
    options = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if len(rel.parts) == 1 or rel.parts[0] in SKIP_GROUPS or rel.as_posix() == "data/_run.yaml":
            continue  # data/_run: what evaluate/audit/augment compose data.<key>= onto, not a dataset
        group = "/".join(rel.parts[:-1])
        options.append((group, path.stem))
    return options


def test_augment_test_data_options_compose():
    for path in sorted((CONF / "test_data").glob("*.yaml")):
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose("augment", overrides=[f"test_data={path.stem}", "synthetic=x"], return_hydra_config=True)
        assert cfg.hydra.runtime.choices["test_data"] == path.stem and cfg.test_data._target_.startswith("ganlab.")


def test_conf_has_the_expected_groups():
    groups = {g for g, _ in group_options()}
    assert {"data", "model", "model/loss", "trainer", "logger", "callbacks"} <= groups


@pytest.mark.parametrize("group,option", group_options(), ids=lambda v: str(v))
def test_every_group_option_composes_into_train(group, option):
    override = f"{group}={option}"
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[override], return_hydra_config=True)
    assert cfg.hydra.runtime.choices[group] == option  # the override chose this very option
    top = group.split("/")[0]
    if top in ("data", "model", "trainer", "logger"):
        assert top in cfg
    for checked in ("model", "data", "trainer"):
        check_argument_types(cfg[checked], checked)  # no shipped option trips the type check


def test_metrics_none_under_a_preset_that_tunes_metrics_builds_no_callback():
    from ganlab.training import build_metrics

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=brainsim_quality", "metrics=none"])
    assert cfg.metrics and "_target_" not in cfg.metrics  # the preset's every_n_epochs stays behind
    assert build_metrics(cfg) == []


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


def test_data_configs_state_only_what_differs_from_the_base():
    """Every dataset inherits conf/data/_base.yaml (directly or through another dataset) and repeats
    none of its values, so a new dataset is its _target_ plus what differs."""
    base = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "_base.yaml"))
    options = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if not p.stem.startswith("_"))
    for option in options:
        own = OmegaConf.to_container(OmegaConf.load(CONF / "data" / f"{option}.yaml"))
        parents = [d for d in own.pop("defaults", []) if d != "_self_"]
        assert parents and set(parents) <= {"_base", *options}, option
        assert "_target_" in own or parents != ["_base"], option
        assert not [k for k, v in own.items() if k in base and base[k] == v], option
        with initialize_config_dir(str(CONF), version_base="1.3"):
            data = compose("train", overrides=[f"data={option}"]).data
        assert set(base) <= set(data), option


def test_the_run_data_node_has_every_data_key_unset():
    """evaluate/audit/augment compose `data.<key>=` onto conf/data/_run.yaml: a key it lacks is refused by Hydra."""
    run = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "_run.yaml"))
    assert set(run.values()) == {None}
    options = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if not p.stem.startswith("_"))
    with initialize_config_dir(str(CONF), version_base="1.3"):
        keys = {k for option in options for k in compose("train", overrides=[f"data={option}"]).data}
    assert keys - {"_target_"} == set(run)


@pytest.mark.parametrize("override,message", [
    ("model.generator.width=abc", "model.generator.width='abc': expected an integer"),
    ("model.latent_dim=abc", "model.latent_dim='abc': expected an integer"),
    ("model.lr_d=fast", "model.lr_d='fast': expected a number"),
    ("trainer.max_epochs=1.5", "trainer.max_epochs=1.5: expected an integer"),
    ("trainer.strategy.channels_last=maybe", "trainer.strategy.channels_last='maybe': expected true or false"),
])
def test_mistyped_numbers_are_named_before_anything_is_built(override, message):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[override])
    group = override.split(".")[0]
    with pytest.raises(GanlabError) as err:
        check_argument_types(cfg[group], group)
    assert str(err.value) == message


@pytest.mark.parametrize("overrides,expected", [
    (["model=cdcgan", "data=alzheimer"], True),          # the user's sentence: the rare class is seen as often
    (["model=cdcgan", "data=alzheimer", "data.balanced_sampling=false"], False),  # the command line wins
    (["model=cdcgan", "data.balanced_sampling=0.5"], 0.5),
    (["model=dcgan"], False),                             # an unconditional model learns the data's own mix
    (["model=gan", "data=alzheimer"], False),
    (["experiment=oasis_dcgan"], False),
    (["experiment=brainsim_quality"], True),
])
def test_a_conditional_model_brings_class_balanced_sampling(overrides, expected):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.data.balanced_sampling == expected
