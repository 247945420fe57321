"""python -m ganlab.generate ckpt=... out=... [n_per_class=N | balance=fill] [classes=[...]] [seed=S]

Writes PNGs at the training resolution in ImageFolder layout `out/<class>/<class>_<index>.png` plus
`out/manifest.csv`, and `out/generate.json` (the checkpoint, its run and that run's data config, which
audit and augment use as the real data). The images are made in a temporary sibling directory that is renamed into place
only when complete, so an interrupted run leaves nothing half-made. The folder loads back with
`data=folder data.root=<out>` or, from Python, with `load_generated(out)` (a torch Dataset).

`filter_min_prob=P` (conditional checkpoints) keeps only samples that a classifier trained on the run's
real training split puts in their own class with probability >= P; `filter_novelty_percentile=Q` only
samples at least as far from their nearest real training image as the Q-th percentile of the held-out real
images of their class (ganlab/utility/curate.py). Each kept image's probability and distance are in the manifest
(`judge_prob`, `nearest_train_distance`), each class's acceptance rate in generate.json.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from ganlab.atomic import publish_dir
from ganlab.checkpoint import file_sha256, load_gan
from ganlab.cli import CONFIG_DIR, entry_point
from ganlab.config import check_call_arguments
from ganlab.data.folder import UInt8ImageDataset
from ganlab.pixels import to_uint8
from ganlab.errors import GanlabError
from ganlab.latents import truncated_noise
from ganlab.run_data import run_dir_of, training_data
from ganlab.utility.curate import NoveltyYardstick, fit_judge, own_class_prob, real_splits

MANIFEST_FIELDS = ("file", "class", "label", "seed", "checkpoint_sha256", "model", "ema", "truncation", "judge_prob",
                   "nearest_train_distance")


def plan_counts(class_names: list[str], class_counts: dict[str, int], *, n_per_class: int,
                balance: str | None, classes: list[str] | None) -> dict[str, int]:
    """How many images of each class to make."""
    classes = [classes] if isinstance(classes, str) else classes  # classes=ModerateDemented: one class
    unknown = sorted(set(classes or []) - set(class_names))
    if unknown:
        raise GanlabError(f"classes={unknown} not in the checkpoint's classes {class_names}")
    chosen = list(classes) if classes else list(class_names)
    if balance is None:
        if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
            raise GanlabError(f"n_per_class={n_per_class!r}: expected a positive integer")
        return {name: n_per_class for name in chosen}
    if balance != "fill":
        raise GanlabError(f"balance={balance!r}: the only balance mode is 'fill'")
    target = max(class_counts.values())
    counts = {name: target - class_counts.get(name, 0) for name in chosen}
    if not any(counts.values()):
        raise GanlabError(f"balance=fill: {', '.join(chosen)} already hold(s) the largest class's {target} training "
                          "images, so there is nothing to fill; use n_per_class=N")
    return counts


def save_png(image: torch.Tensor, path: Path) -> None:
    arr = to_uint8(image).permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr, "L" if arr.shape[2] == 1 else "RGB").save(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_out_dir(out: Path, overwrite: bool, ckpt: str) -> None:
    """Refused before anything is loaded: a file, a path through a file, a non-empty folder without overwrite, and
    a folder (overwritten or not) that holds the checkpoint being sampled."""
    if out.exists() and not out.is_dir():
        raise GanlabError(f"out={out} is a file; name a folder for the images")
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise GanlabError(f"out={out}: {blocked} is a file, so no folder can be made under it")
    if out.is_dir() and Path(ckpt).expanduser().resolve().is_relative_to(out.resolve()):
        raise GanlabError(f"out={out} holds the checkpoint {ckpt} being sampled; choose another `out=`")
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise GanlabError(f"out={out} holds the working directory; choose a folder of its own for the images")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise GanlabError(f"output directory {out} is not empty; choose another `out=` or pass overwrite=true")


def prepare_out_dir(out: Path) -> Path:
    """A fresh temporary sibling of `out`; leftovers of killed runs (dead pid in the name) are removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit(".partial-", 1)[1].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))


def generate(ckpt: str, out: str, *, n_per_class: int = 100, balance: str | None = None,
             classes: list[str] | None = None, seed: int = 0, truncation: float | None = None,
             ema: bool = True, batch_size: int = 256, overwrite: bool = False,
             filter_min_prob: float | None = None, filter_novelty_percentile: float | None = None,
             filter_max_draws: int = 20) -> dict[str, int]:
    out_dir = Path(out).expanduser()
    check_out_dir(out_dir, overwrite, ckpt)
    if truncation is not None and not truncation > 0:
        raise GanlabError(f"truncation={truncation!r}: expected a number > 0 (null: plain normal noise)")
    if batch_size < 1:
        raise GanlabError(f"batch_size={batch_size!r}: expected an integer >= 1")
    module, facts = load_gan(ckpt)
    trained = training_data(ckpt)
    conditional = module.conditional
    if balance is not None and not conditional:
        raise GanlabError(f"balance={balance}: {ckpt} is an unconditional model, whose samples have no class to "
                          "balance; use n_per_class=N (images in total)")
    class_names = facts["class_names"] if conditional else ["generated"]
    counts = plan_counts(class_names, facts["class_counts"] if conditional else {"generated": 0},
                         n_per_class=n_per_class, balance=balance if conditional else None, classes=classes)
    filtered = filter_min_prob is not None or filter_novelty_percentile is not None
    judge, novelty = make_filter(ckpt, class_names, conditional, seed=seed, min_prob=filter_min_prob,
                                 novelty_percentile=filter_novelty_percentile,
                                 max_draws=filter_max_draws) if filtered else (None, None)
    rule = " ".join(f"{k}={v}" for k, v in [("filter_min_prob", filter_min_prob),
                                            ("filter_novelty_percentile", filter_novelty_percentile)] if v is not None)
    tmp = prepare_out_dir(out_dir)
    checkpoint_hash, model_name = file_sha256(ckpt), module.generator.__class__.__name__
    rng = torch.Generator().manual_seed(seed)
    rows, drawn, passed = [], {}, {}
    try:
        for name, n in counts.items():
            (tmp / name).mkdir()
            label = class_names.index(name)
            kept = drawn[name] = passed[name] = 0
            while kept < n:
                if filtered and drawn[name] >= filter_max_draws * n:
                    raise GanlabError(f"{rule}: class {name} kept {kept} of {n} images after {drawn[name]} draws; "
                                      "loosen the filter or raise filter_max_draws")
                size = min(batch_size, n - kept if not filtered else filter_max_draws * n - drawn[name])
                z = truncated_noise(size, module.latent_dim, truncation, rng)
                labels = torch.full((size,), label, dtype=torch.long) if conditional else None
                images = module.sample(size, labels=labels, z=z, ema=ema)
                drawn[name] += size
                probs = distances = [None] * size
                if filtered:
                    saved = to_uint8(images)  # judged as saved
                    p = own_class_prob(judge, saved, labels)
                    d = novelty.distance(saved) if novelty is not None else None
                    ok = torch.ones(size, dtype=torch.bool)
                    if filter_min_prob is not None:
                        ok &= p >= filter_min_prob
                    if novelty is not None:
                        ok &= novelty.passes(d, labels)
                    keep = ok.nonzero()[:, 0]
                    passed[name] += len(keep)
                    keep = keep[: n - kept]  # a last batch's surplus passes but is not needed
                    images, probs = images[keep], [round(float(v), 4) for v in p[keep]]
                    if d is not None:
                        distances = [round(float(v), 5) for v in d[keep]]
                for i, image in enumerate(images):
                    rel = f"{name}/{name}_{kept + i:05d}.png"
                    save_png(image, tmp / rel)
                    rows.append({"file": rel, "class": name, "label": label, "seed": seed,
                                 "checkpoint_sha256": checkpoint_hash, "model": model_name, "ema": ema,
                                 "truncation": truncation, "judge_prob": probs[i],
                                 "nearest_train_distance": distances[i]})
                kept += len(images)
        with open(tmp / "manifest.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        # the run and its data: audit and augment compare these images with that very data
        (tmp / "generate.json").write_text(json.dumps({
            "ckpt": str(Path(ckpt).resolve()), "run": str(run_dir_of(ckpt).resolve()),
            "data": trained[0] if trained else None, "data_source": trained[1] if trained else None,
            "counts": counts, "seed": seed, "truncation": truncation, "ema": ema,
            "filter": None if not filtered else {
                "min_prob": filter_min_prob, "novelty_percentile": filter_novelty_percentile,
                "min_distance": None if novelty is None else dict(zip(class_names, novelty.min_distance)),
                "drawn": drawn, "passed": passed,
                "acceptance": {c: passed[c] / drawn[c] for c in counts if drawn[c]}}}, indent=2))
        publish_dir(tmp, out_dir)  # replaces an empty folder, or one that overwrite=true allows
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def make_filter(ckpt: str, class_names: list[str], conditional: bool, *, seed: int, min_prob: float | None,
                novelty_percentile: float | None, max_draws: int) -> tuple[object, NoveltyYardstick | None]:
    """(the judge, the novelty yardstick or None), after checking the filter's settings."""
    if not conditional:
        raise GanlabError("generate's filters: only a conditional checkpoint's samples have a class to check")
    if min_prob is not None and not 0 < min_prob < 1:
        raise GanlabError(f"filter_min_prob={min_prob} must lie in (0, 1)")
    if novelty_percentile is not None and not 0 < novelty_percentile < 100:
        raise GanlabError(f"filter_novelty_percentile={novelty_percentile} must lie in (0, 100)")
    if max_draws < 1:
        raise GanlabError(f"filter_max_draws={max_draws} must be >= 1")
    train, holdout, names = real_splits(ckpt)
    if names != list(class_names):
        raise GanlabError(f"{ckpt}: the run's data has classes {names}, the checkpoint {list(class_names)}")
    judge = fit_judge(train, len(names), seed=seed)
    if novelty_percentile is None:
        return judge, None
    return judge, NoveltyYardstick(judge, train.images, holdout.images, novelty_percentile, holdout.labels, names)


def read_manifest(out: str | Path) -> list[dict]:
    path = Path(out).expanduser() / "manifest.csv"
    if not path.is_file():
        raise GanlabError(f"{path} does not exist: {Path(out)} is not a ganlab.generate output")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def load_generated(out: str | Path, class_names: list[str] | None = None) -> UInt8ImageDataset:
    """A generate output folder as an in-memory Dataset of (uint8 (C, H, W), label) pairs.

    Labels index `class_names` (e.g. the real data's classes, so both can be concatenated); by default
    the checkpoint's own class order as written in the manifest.
    """
    out = Path(out).expanduser()
    rows = read_manifest(out)
    if class_names is None:
        names = {int(r["label"]): r["class"] for r in rows}
        class_names = [names.get(i, f"class{i}") for i in range(max(names, default=-1) + 1)]
    unknown = sorted({r["class"] for r in rows} - set(class_names))
    if unknown == ["generated"]:
        raise GanlabError(f"{out} was sampled from an unconditional model: its images have no class of "
                          f"{list(class_names)}; sample a class-conditional (model=cdcgan) checkpoint, or audit the "
                          "unconditional one with ckpt=")
    if unknown:
        raise GanlabError(f"{out}: generated classes {unknown} are not among {list(class_names)}")
    images = []
    for r in rows:
        with Image.open(out / r["file"]) as im:
            arr = np.asarray(im.convert("L" if im.mode in ("L", "I", "I;16") else "RGB"), dtype=np.uint8)
        images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    labels = torch.tensor([class_names.index(r["class"]) for r in rows], dtype=torch.long)
    stacked = torch.from_numpy(np.stack(images)) if images else torch.empty(0, 1, 1, 1, dtype=torch.uint8)
    return UInt8ImageDataset(stacked, labels, [str(out / r["file"]) for r in rows])


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="generate")
@entry_point
def main(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # ckpt= and out= are required
    options.pop("hydra", None)
    check_call_arguments(generate, options)
    counts = generate(**options)
    print(f"wrote {sum(counts.values())} images to {cfg.out}: {counts}")


if __name__ == "__main__":
    main()
