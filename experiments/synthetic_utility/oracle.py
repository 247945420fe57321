"""The ceiling of the utility benchmark: new REAL images in place of synthetic ones.

    python experiments/synthetic_utility/run.py --ckpt <cdcgan last.ckpt> --oracle 7000 --core oracle --jobs 3

A perfect generator would sample the real distribution. brainsim can: rendering with another render_seed
draws new brains of every class from the very distribution the training images came from. `oracle_set`
writes such a render in ganlab.generate's layout (`<class>/<class>_<i>.png`, manifest.csv, generate.json
with the generator run's data config), so that the benchmark's own augment and audit stages read it as
they read a synthetic set. Every regime then shows what the best possible synthetic images could give
on this test set and classifier: an upper bound for a generator, and a calibration of the audit (new real
images should sit at ~1% / ~5% below the held-out 1st / 5th percentile).

A Kaggle-layout copy written by alzheimer_copy.py (its root holds copy.json) is brainsim too: its new images are
drawn the way the copy drew its own (same size, JPEG quality 90, stored as .jpg), from random streams
`[render_seed, class, i]` that the copy's `[seed, split, class, i]` never uses.
"""
from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path

from ganlab.atomic import publish_dir
from ganlab.data.brainsim import CLASS_NAMES, render_brainsim
from ganlab.errors import GanlabError
from ganlab.generate import MANIFEST_FIELDS
from ganlab.run_data import training_data

from alzheimer_copy import COPY_INFO, save_slice

# render seeds the benchmark already uses: the training data (0) and the external test set (1000)
TAKEN_RENDER_SEEDS = {0, 1000}


def copy_info(data: dict) -> dict | None:
    """alzheimer_copy.py's record of how the copy at the data config's root was rendered, or None."""
    root = data.get("root")
    path = Path(root) / COPY_INFO if root else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def render_brainsim_files(tmp: Path, data: dict, per_class: int, render_seed: int) -> list[str]:
    """brainsim's own render of the data config with another seed, moved into generate's layout."""
    render = render_brainsim(tmp / "render", image_size=data["image_size"], per_class=per_class,
                             test_fraction=0.0, seed=render_seed, channels=data.get("channels", 1))
    files = []
    for name in CLASS_NAMES:
        for i, src in enumerate(sorted((render / "train" / name).glob("*.png"))):
            files.append(f"{name}/{name}_{i:05d}.png")
            shutil.move(src, tmp / files[-1])
    shutil.rmtree(render)
    return files


def render_copy_files(tmp: Path, info: dict, per_class: int, render_seed: int) -> list[str]:
    """New images of an alzheimer_copy.py copy, drawn and stored as the copy drew and stored its own."""
    files = []
    for label, name in enumerate(CLASS_NAMES):
        for i in range(per_class):
            files.append(f"{name}/{name}_{i:05d}.jpg")
            save_slice(tmp / files[-1], [render_seed, label, i], label, info["size"])
    return files


def oracle_set(out: Path, ckpt: Path, per_class: int, render_seed: int) -> dict[str, int]:
    """Render `per_class` new real images per class with `render_seed` into `out` (generate's layout);
    returns the counts. Refuses a render seed of the training or test data and a non-empty `out`."""
    trained = training_data(ckpt)
    if trained is None:
        raise GanlabError(f"{ckpt}: no config_resolved.yaml of its run, so no data config to render like")
    data, source = trained
    brainsim = str(data.get("_target_", "")).endswith("BrainSimDataModule")
    info = None if brainsim else copy_info(data)
    if not brainsim and info is None:
        raise GanlabError(f"--oracle renders brainsim or a copy written by alzheimer_copy.py (its root holds "
                          f"{COPY_INFO}); {ckpt} was trained on {data.get('_target_')}, root {data.get('root')}")
    taken = TAKEN_RENDER_SEEDS | {data.get("render_seed", 0)} if brainsim else {info["brainsim_seed"]}
    if render_seed in taken:
        raise GanlabError(f"--oracle {render_seed}: that render seed draws the training or test images")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise GanlabError(f"{out} is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in CLASS_NAMES:
            (tmp / name).mkdir()
        files = (render_brainsim_files(tmp, data, per_class, render_seed) if brainsim
                 else render_copy_files(tmp, info, per_class, render_seed))
        model = f"brainsim render_seed={render_seed}" + ("" if brainsim else f", as the copy at {data['root']}")
        rows = [{"file": f, "class": f.split("/")[0], "label": CLASS_NAMES.index(f.split("/")[0]),
                 "seed": render_seed, "model": model} for f in files]
        with open(tmp / "manifest.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        counts = {name: sum(r["class"] == name for r in rows) for name in CLASS_NAMES}
        (tmp / "generate.json").write_text(json.dumps({
            "oracle": f"real brainsim images, render_seed={render_seed}", "ckpt": None, "run": None,
            "data": data, "data_source": source, "counts": counts, "seed": render_seed}, indent=2))
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
