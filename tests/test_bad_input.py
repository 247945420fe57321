"""The bad-input matrix: each mistake ends in a clear message naming the key or file, a non-zero exit,
no traceback, and no half-written output (the run directory does not exist afterwards).

Run with `-s` to print the matrix: one `MATRIX | row | exit | message` line per row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY

SMALL = [o for o in TINY if not o.startswith("data.per_class")]  # also valid for data=folder


def image_folder(root: Path, counts: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def corrupt_folder(tmp: Path) -> Path:
    root = image_folder(tmp / "corrupt", {"a": 12, "b": 12})
    (root / "b" / "broken.png").write_bytes(b"not a png at all")
    return root


def empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_checkpoint(tmp: Path) -> Path:
    torch.save({"state_dict": {}, "ganlab": {"model": {}, "data": {}}, "x": RunsCode(tmp / "pwned")},
               tmp / "evil.ckpt")
    return tmp / "evil.ckpt"


def used_run_dir(tmp: Path) -> Path:
    (tmp / "run" / "checkpoints").mkdir(parents=True)
    (tmp / "run" / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    (tmp / "run" / "config_resolved.yaml").write_text("the earlier run's config")
    (tmp / "run" / ".hydra").mkdir()
    (tmp / "run" / ".hydra" / "config.yaml").write_text("the earlier run's composed config")
    (tmp / "run" / "train.log").write_text("the earlier run's log")
    return tmp / "run"


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def used_audit_dir(tmp: Path) -> Path:
    (tmp / "audit" / ".hydra").mkdir(parents=True)
    (tmp / "audit" / "audit.json").write_text("an earlier audit")
    (tmp / "audit" / ".hydra" / "config.yaml").write_text("the earlier audit's config")
    return tmp / "audit"


def nonempty_dir(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("mine")
    return tmp / "out"


@dataclass
class Row:
    args: list[str]  # {tmp}, {ckpt} and {made} (what `make` returned) are filled in
    expect: list[str]  # substrings of the message
    module: str = "ganlab.train"
    exit_code: int = 2
    make: Callable[[Path], Path] | None = None
    keeps: tuple[str, ...] = ()  # files in the row's directory that existed before and must stay as they were
    env: dict[str, str] = field(default_factory=dict)  # {tmp} is filled in
    cpu_only: bool = False
    min_cpus: int = 1
    whole_stderr: bool = False  # the error line is all the command writes to stderr


MATRIX = {
    "unknown config key": Row(["model.lr=0.1"], ["Could not override 'model.lr'", "not in struct"], exit_code=1),
    "unknown group option": Row(["model=stylegan"], ["Could not find 'model/stylegan'", "dcgan"], exit_code=1),
    "wrong type (model)": Row(["model.lr_g=abc"], ["model.lr_g='abc': expected a number"]),
    "wrong type (trainer)": Row(["trainer.max_epochs=abc"], ["trainer.max_epochs='abc': expected an integer"]),
    "wrong type (network)": Row(["model.generator.width=abc"], ["model.generator.width='abc': expected an integer"]),
    "schedule over a budget the run lacks": Row(["model.lr_decay_start=0.5", "trainer.max_epochs=-1"],
                                                ["model.lr_decay_start=0.5", "set trainer.max_steps"]),
    "image size the network cannot make": Row(["data.image_size=48"], ["image_size=48 is not supported",
                                                                      "(32, 64, 128, 256)"]),
    "data root missing": Row(["data=folder", "data.root={tmp}/nowhere"], ["data root", "nowhere does not exist"]),
    "data root empty": Row(["data=folder", "data.root={made}"], ["no class folders under", "empty"],
                           make=empty_folder),
    "corrupt image file": Row(["data=folder", "data.root={made}"], ["cannot read image", "broken.png",
                                                                     "data.skip_bad_files"], make=corrupt_folder),
    "dataset smaller than a batch": Row(["data=folder", "data.root={made}"], ["fewer than one batch",
                                                                               "data.batch_size=8"],
                                        make=lambda tmp: image_folder(tmp / "small", {"a": 3})),
    "DDP: fewer than a batch per process": Row(["data=folder", "data.root={made}", "trainer.accelerator=cpu",
                                                "trainer.devices=2"],
                                               ["split over trainer.devices=2 processes", "data.batch_size=8"],
                                               make=lambda tmp: image_folder(tmp / "ddp", {"a": 14}), min_cpus=2),
    "no training batch at all": Row(["trainer.limit_train_batches=0", "logger=none", "metrics=none"],
                                    ["training ran no step", "nothing was trained"]),
    "unknown precision": Row(["trainer.precision=bogus"], ["error: trainer.precision=bogus: Precision 'bogus' is "
                                                           "invalid"]),
    "unreadable time budget": Row(["trainer.max_time=bogus"], ["error: trainer.max_time=bogus:", "DD:HH:MM:SS"]),
    "W&B online with a key it refuses": Row(["logger=wandb"], ["error: W&B could not start an online run",
                                                               "WANDB_MODE=offline"], env={"WANDB_API_KEY": "dummy"}),
    "latent size 0": Row(["model.latent_dim=0"], ["error: model.latent_dim=0: expected an integer >= 1"]),
    "negative loader workers": Row(["data.num_workers=-1"], ["error: data.num_workers=-1: expected an integer >= 0"]),
    "seed not a number": Row(["seed=abc"], ["error: seed='abc': expected an integer"]),
    "Lightning's plain DDP": Row(["trainer.strategy=ddp"], ["error: trainer.strategy=ddp:", "find_unused_parameters"]),
    "GPU requested, none present": Row(["trainer.accelerator=gpu"], ["trainer.accelerator=gpu", "0 CUDA GPU(s)"],
                                       cpu_only=True),
    "more devices than present": Row(["trainer.accelerator=cpu", "trainer.devices={cpus_plus_one}"],
                                     ["trainer.devices={cpus_plus_one} CPU processes", "CPU cores"]),
    "resume a checkpoint of another model family": Row(["model=dcgan", "ckpt_path={ckpt}"],
                                                       ["holds a cdcgan model but this run builds dcgan"]),
    "resume a crafted pickle": Row(["ckpt_path={made}"], ["refusing to load checkpoint", "evil.ckpt"],
                                   make=evil_checkpoint),
    "resume an empty checkpoint file": Row(["ckpt_path={made}"], ["refusing to load checkpoint", "empty.ckpt",
                                                                  "not a readable checkpoint (EOFError)"],
                                           make=lambda tmp: empty_file(tmp / "empty.ckpt")),
    "fresh run into a used run dir": Row(["hydra.run.dir={made}"], ["already holds checkpoints", "ckpt_path=last"],
                                         make=used_run_dir, keeps=("checkpoints/last.ckpt", "config_resolved.yaml",
                                                                 ".hydra/config.yaml", "train.log")),
    "audit into a used run dir": Row(["ckpt={tmp}/any.ckpt", "hydra.run.dir={made}"],
                                     ["error: {made} already holds results ['audit.json']; pass overwrite=true"],
                                     module="ganlab.audit", make=used_audit_dir,
                                     keeps=("audit.json", ".hydra/config.yaml"), whole_stderr=True),
    "a run folder given as the checkpoint": Row(["ckpt={tmp}", "out={tmp}/images"],
                                                ["error: checkpoint {tmp} is a folder; name the .ckpt file"],
                                                module="ganlab.generate", whole_stderr=True),
    "augment a folder that does not exist": Row(["synthetic={tmp}/nope", "hydra.run.dir={tmp}/run"],
                                                ["error: synthetic={tmp}/nope does not exist"], module="ganlab.augment"),
    "evaluate: sample count not a number": Row(["ckpt={tmp}/any.ckpt", "n_samples=abc"],
                                               ["error: n_samples='abc': expected an integer >= 1"],
                                               module="ganlab.evaluate", whole_stderr=True),
    "evaluate into a file": Row(["ckpt={tmp}/any.ckpt", "out={made}"], ["error: out={made}: {made} is a file"],
                                module="ganlab.evaluate", make=lambda tmp: empty_file(tmp / "results.txt"),
                                whole_stderr=True),
    "generate into a non-empty directory": Row(["ckpt={ckpt}", "out={made}", "n_per_class=2"],
                                               ["error: output directory {made} is not empty; choose another `out=` "
                                                "or pass overwrite=true"],
                                               module="ganlab.generate", make=nonempty_dir, keeps=("keep.txt",),
                                               whole_stderr=True),
    "missing Inception weights offline": Row(["ckpt={ckpt}", "metrics=inception", "out={tmp}/run"],
                                             ["Inception weights not found", "no download is attempted"],
                                             module="ganlab.evaluate",
                                             env={"TORCH_HOME": "{tmp}/torch_home"}),
}


def snapshot(path: Path, names) -> dict[str, bytes | None]:
    return {n: (path / n).read_bytes() if (path / n).is_file() else None for n in names}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input(name, run_cli, cli_env, tmp_path, request):
    row = MATRIX[name]
    if row.cpu_only and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if (os.cpu_count() or 1) < row.min_cpus:
        pytest.skip(f"this machine has fewer than {row.min_cpus} CPU cores")
    made = row.make(tmp_path) if row.make else None
    ckpt = request.getfixturevalue("cdcgan_ckpt") if any("{ckpt}" in a for a in row.args) else None
    fill = dict(tmp=tmp_path, made=made, ckpt=ckpt, cpus_plus_one=(os.cpu_count() or 1) + 1)
    args = [a.format(**fill) for a in row.args]
    expect = [e.format(**fill) for e in row.expect]
    before = snapshot(made, row.keeps) if row.keeps else None
    run_dir = tmp_path / "run"
    if row.module == "ganlab.train":
        args = [*SMALL, "logger=wandb", *args]
        if not any(a.startswith("hydra.run.dir=") for a in args):
            args.append(f"hydra.run.dir={run_dir}")

    env = {**cli_env, **{k: v.format(**fill) for k, v in row.env.items()}}
    result = run_cli(row.module, *args, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    message = next((line for line in lines if line.startswith("error: ")), " / ".join(lines[:3]))
    print(f"\nMATRIX | {name} | exit {result.returncode} | {message}")

    assert result.returncode == row.exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in expect:
        assert text in result.stderr, (text, result.stderr[-2000:])
    if row.exit_code == 2:  # ganlab's own errors: exactly one line, the last one on stderr
        assert message.startswith("error: ") and lines[-1] == message
    if row.whole_stderr:
        assert lines == [message], lines
    if row.keeps:
        assert snapshot(made, row.keeps) == before  # an earlier run's files are left as they were
        assert not list(made.parent.glob(f".{made.name}.partial-*"))
    else:
        assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())
    assert not (tmp_path / "pwned").exists()


def test_a_bad_setting_leaves_no_empty_date_folder(run_cli, tmp_path):
    """Hydra's default run dir is outputs/<date>/<time>: a run refused before training leaves neither."""
    (tmp_path / "mine").mkdir()  # a folder of the user's, empty, beside: left alone
    result = run_cli("ganlab.train", *SMALL, "logger=none", "model=dcgan", "model.gsr_weight=0.5")
    assert result.returncode == 2 and "model.generator.conditioning=cbn" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "outputs").exists(), sorted(str(p) for p in (tmp_path / "outputs").rglob("*"))
    assert (tmp_path / "mine").is_dir()
