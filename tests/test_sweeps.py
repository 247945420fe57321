"""Hydra multiruns: one run dir per job, a shared W&B group, the summary table over seeds; the
Optuna sweeper, the SLURM launcher and the experiment presets compose."""
from __future__ import annotations

import csv
import json
import math
import statistics

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import REPO, TINY, assert_ok
from ganlab.sweep import config_label, write_summary

PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def compose_train(overrides, hydra=False):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra)


def test_optuna_sweeper_composes():
    cfg = compose_train(["hparams_search=optuna"], hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == cfg.seed
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.optimized_metric
    assert all(OmegaConf.select(cfg, key, default="absent") != "absent" for key in sweeper.params)  # real keys
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert all(o.is_sweep_override() for o in parsed)  # the sweeper can read every search range


def test_slurm_launcher_composes_from_the_trainer_settings():
    cfg = compose_train(["hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2"],
                        hydra=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (4, 4, 2)
    assert launcher["submitit_folder"].endswith(".submitit/%j")
    # pre-emption: USR2 two minutes ahead, the job requeueable, up to 3 requeues (each resumes last.ckpt)
    assert launcher["signal_delay_s"] == 120 and launcher["max_num_timeout"] == 3
    assert launcher["additional_parameters"] == {"requeue": True}


@pytest.mark.parametrize("preset", PRESETS)
def test_experiment_presets_compose(preset):
    cfg = compose_train([f"experiment={preset}"])
    model = OmegaConf.to_container(cfg.model, resolve=True)  # interpolations (data.num_classes ...) resolve
    assert cfg.group == preset and model["_target_"].endswith("GANModule")
    conditional = model["generator"]["_target_"].endswith("ConditionalDCGANGenerator")
    assert (model["num_classes"] > 0) == conditional
    assert model["generator"]["image_size"] == cfg.data.image_size


def test_presets_cover_the_datasets():
    assert {"alzheimer_cdcgan", "oasis_dcgan", "brain_tumor_dcgan", "brainsim_cdcgan"} <= set(PRESETS)


def test_quality_preset_is_the_ladder_setting_with_a_ten_minute_budget():
    cfg = compose_train(["experiment=brainsim_quality"])
    assert cfg.data.image_size == 64 and dict(cfg.data.imbalance) == {"ModerateDemented": 0.06}
    assert cfg.data.balanced_sampling and cfg.data.batch_size == 128 and cfg.model.generator.conditioning == "cbn"
    assert cfg.model.loss._target_.endswith("HingeLoss") and cfg.trainer.max_time == "00:00:10:00"
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.strategy.channels_last
    assert cfg.model.augment_p == 1.0 and cfg.model.translation_ratio == 0.0625 and cfg.model.diffaugment == "translation"


def test_gpu_quality_preset_is_the_quality_preset_on_a_gpu_with_the_per_epoch_work_spread_out():
    """Only how it runs differs: trainer=gpu, and checkpoints, grids and metrics less often (an epoch of this
    setting is ~11 batches, a fraction of a second on a GPU)."""
    gpu = OmegaConf.to_container(compose_train(["experiment=brainsim_quality_gpu"]))
    cpu = OmegaConf.to_container(compose_train(["experiment=brainsim_quality", "trainer=gpu"]))
    assert gpu["trainer"]["accelerator"] == "gpu" and gpu["trainer"]["strategy"]["data_on_device"]
    spread = {("callbacks", "checkpoint", "every_n_epochs"): 50, ("callbacks", "samples", "every_n_epochs"): 50,
              ("metrics", "every_n_epochs"): 500, ("group",): "brainsim_quality_gpu"}
    for keys, value in spread.items():
        g, c = gpu, cpu
        for k in keys[:-1]:
            g, c = g[k], c[k]
        assert g[keys[-1]] == value and c[keys[-1]] != value
        g[keys[-1]] = c[keys[-1]]
    assert gpu == cpu


def test_alzheimer_gpu_preset_carries_the_ladders_translation():
    cfg = compose_train(["experiment=alzheimer_cdcgan"])
    assert cfg.data.balanced_sampling and cfg.data.image_size == 64
    assert cfg.model.diffaugment == "translation" and cfg.model.translation_ratio == 0.0625
    assert cfg.model.augment_p == 1.0


def fake_job(sweep, num, overrides, metrics, history=None):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if history is not None:  # the metrics callback's records: {name: record}
        (job / "metrics_history.jsonl").write_text(json.dumps({"event": "evaluation", "metrics": history}) + "\n")


def test_summary_mean_and_std_over_seeds(tmp_path):
    history = {"metrics/n_fake": {"value": 64}, "metrics/fid": {"value": 10.0, "headline": True, "better": "lower"},
               "metrics/fid_real": {"value": 1.0, "reference": "metrics/fid"}}
    fake_job(tmp_path, 0, ["model=dcgan", "seed=1"], {"metrics/fid": 10.0, "metrics/n_fake": 64, "train/loss_g": 1.0},
             history)
    fake_job(tmp_path, 1, ["model=dcgan", "seed=2"], {"metrics/fid": 14.0, "metrics/n_fake": 64, "train/loss_g": 3.0})
    fake_job(tmp_path, 2, ["model=cdcgan", "seed=1"], {"metrics/fid": 7.0, "metrics/n_fake": 64, "train/loss_g": 2.0})
    fake_job(tmp_path, 3, ["model=cdcgan", "seed=2"], None)  # failed job: left out
    md = write_summary(tmp_path)
    rows = {r["config"]: r for r in csv.DictReader(open(tmp_path / "summary.csv"))}
    assert set(rows) == {"model=dcgan", "model=cdcgan"}
    dc = rows["model=dcgan"]
    assert (dc["n"], dc["seeds"]) == ("2", "1 2")
    assert float(dc["metrics/fid_mean"]) == 12.0
    assert math.isclose(float(dc["metrics/fid_std"]), statistics.stdev([10.0, 14.0]))
    assert rows["model=cdcgan"]["n"] == "1" and math.isnan(float(rows["model=cdcgan"]["metrics/fid_std"]))
    text = md.read_text()
    # columns: what the metrics called headline numbers (with the better direction), then training numbers
    assert "| config | n | metrics/fid ↓ | train/loss_g |" in text
    assert "| model=dcgan | 2 | 12 ± 2.828 | 2 ± 1.414 |" in text
    assert float(dc["metrics/n_fake_mean"]) == 64  # summary.csv keeps every key


def test_config_label_ignores_the_seed_only():
    assert config_label(["seed=3", "model=cdcgan", "data.image_size=32"]) == "data.image_size=32 model=cdcgan"
    assert config_label(["++seed=3"]) == "(defaults)"


@pytest.mark.slow
def test_multirun_one_dir_per_job_shared_group_and_summary(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("ganlab.train", "-m", *TINY, "model=dcgan,cdcgan", "seed=1,2", "trainer.limit_train_batches=2",
                     "logger=csv", "metrics=none", f"hydra.sweep.dir={sweep}")
    assert_ok(result)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    groups = {yaml.safe_load((j / "config_resolved.yaml").read_text())["group"] for j in jobs}
    assert groups == {f"{tmp_path.name}-sweep"}  # one W&B group, named after the sweep dir
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").exists()
        assert json.loads((job / "metrics.json").read_text())["perf/images_per_sec"] > 0
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert sorted(r["config"] for r in rows) == ["model=cdcgan", "model=dcgan"]
    assert all(r["n"] == "2" and r["seeds"] == "1 2" and float(r["train/loss_d_std"]) > 0 for r in rows)  # seeds differ
    assert "model=cdcgan | 2 |" in (sweep / "summary.md").read_text()


def test_a_bad_value_in_one_job_leaves_the_others_of_the_sweep_running(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("ganlab.train", "-m", *TINY, "model.lr_g=2e-4,-1,3e-4", "trainer.limit_train_batches=1",
                     "logger=none", "metrics=none", f"hydra.sweep.dir={sweep}")
    assert result.returncode != 0 and "error: model.lr_g=-1: expected a positive number" in result.stderr
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "2" / "metrics.json").is_file()
    assert not (sweep / "1").exists()  # the refused job's dir is removed, as a single run's is
    rows = list(csv.DictReader(open(sweep / "summary.csv")))  # the jobs that ran keep their summary
    assert sorted(r["config"] for r in rows) == ["model.lr_g=0.0002", "model.lr_g=0.0003"]


@pytest.mark.slow
def test_optuna_two_trials(run_cli, tmp_path):
    sweep = tmp_path / "optuna"
    result = run_cli("ganlab.train", "hparams_search=optuna", *TINY, "trainer.limit_train_batches=2", "logger=none",
                     "metrics=none", "optimized_metric=train/loss_d", "hydra.sweeper.n_trials=2",
                     f"hydra.sweep.dir={sweep}")
    assert_ok(result)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and "model.lr_g" in best["best_params"]
    losses = [json.loads((sweep / n / "metrics.json").read_text())["train/loss_d"] for n in ("0", "1")]
    assert math.isclose(best["best_value"], min(losses), rel_tol=1e-6)
    assert len(list(csv.DictReader(open(sweep / "summary.csv")))) == 2  # two trials, two configs


def test_summary_names_configs_by_what_the_sweep_varied(tmp_path):
    for num, seed in enumerate((1, 2, 3)):
        fake_job(tmp_path, num, ["data.image_size=32", f"seed={seed}"], {"train/loss_d": float(seed)})
    write_summary(tmp_path)
    (row,) = csv.DictReader(open(tmp_path / "summary.csv"))
    assert (row["config"], row["n"], float(row["train/loss_d_mean"])) == ("(shared overrides only)", "3", 2.0)
    assert "Overrides shared by all jobs: `data.image_size=32`" in (tmp_path / "summary.md").read_text()


def test_make_trains_demo_is_the_cdcgan_with_its_epochs_and_a_time_cap_within_part_1s_five_minutes():
    """`make train` must fit 5 minutes with set-up (~1.5-2 min) on 2 cores: the demo's 40 epochs stop at a cap of
    at most 3 minutes of training on a machine too slow to finish them sooner."""
    text = (REPO / "Makefile").read_text()
    demo = text.split("DEMO   ?=", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ").split()
    cfg = compose_train(demo)
    days, hours, minutes, seconds = map(int, cfg.trainer.max_time.split(":"))
    assert cfg.model.generator.conditioning == "cbn" and cfg.trainer.max_epochs == 40
    assert days == hours == 0 and 0 < 60 * minutes + seconds <= 180
