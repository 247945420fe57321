"""python -m ganlab.evaluate ckpt=<run>/checkpoints/last.ckpt [n_samples=N] [metrics=...] [data=...] [out=<dir>]

Evaluates any ganlab checkpoint with the metric families of training (conf/metrics/, default: domain
FD/KID, precision/recall/density/coverage, SSIM family, conditional accuracy with the domain
classifier's held-out accuracy per class, bootstrap CIs) and writes
`evaluation_<checkpoint name>.json` and `.md` into the checkpoint's run directory (or `out`). The real
data is rebuilt from the run's own `config_resolved.yaml` (relative paths resolved against the
directory training started from), or from a data group given on the command line; it must match the
checkpoint's image size, channels and classes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ganlab.checkpoint import file_sha256, load_gan
from ganlab.cli import CONFIG_DIR, entry_point
from ganlab.device import choose_device
from ganlab.errors import GanlabError
from ganlab.metrics.report import markdown_table
from ganlab.run_data import choose_data, holdout_split, prepared_datamodule, run_dir_of, training_data

def check_facts(facts: dict, datamodule, ckpt: Path) -> None:
    for key in ("image_size", "channels"):
        if facts[key] != getattr(datamodule, key):
            raise GanlabError(f"{ckpt} was trained at {key}={facts[key]} but data.{key}={getattr(datamodule, key)}")
    if list(facts["class_names"]) != list(datamodule.class_names):
        raise GanlabError(f"{ckpt} was trained on classes {facts['class_names']}, "
                          f"the data has {datamodule.class_names}")


def build_suite(cfg: DictConfig):
    if not cfg.get("metrics"):
        raise GanlabError("metrics=none: nothing to evaluate; choose a metrics group (default, fast, inception)")
    overrides = {"n_samples": int(cfg.n_samples)} if cfg.get("n_samples") else {}
    # the suite checks the Inception weights when it is built: before anything slow happens
    return instantiate(cfg.metrics, **overrides).suite


def evaluate(cfg: DictConfig) -> dict:
    if OmegaConf.is_missing(cfg, "ckpt") or not cfg.ckpt:
        raise GanlabError("ckpt=<path to a .ckpt file> is required")
    ckpt = Path(str(cfg.ckpt)).expanduser()
    n = cfg.get("n_samples")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise GanlabError(f"n_samples={n!r}: expected an integer >= 1 (null: the metrics group's)")
    out = Path(str(cfg.out)).expanduser() if cfg.get("out") else None
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None) if out else None
    if blocked is not None:  # found now, not after the whole evaluation
        raise GanlabError(f"out={out}: {blocked} is a file; name a folder for the results")
    suite = build_suite(cfg)
    module, facts = load_gan(ckpt)
    data_cfg, data_source = choose_data(cfg, training_data(ckpt), str(ckpt))
    datamodule = prepared_datamodule(data_cfg)
    check_facts(facts, datamodule, ckpt)
    device = choose_device(cfg.device)
    module.to(device)
    train = datamodule.datasets["train"]
    holdout = datamodule.datasets.get(holdout_split(datamodule))
    start = time.perf_counter()
    suite.prepare(train.images, train.labels, list(datamodule.class_names),
                  holdout=(holdout.images, holdout.labels) if holdout is not None and len(holdout) else None,
                  device=device, generator=module)
    prepared = time.perf_counter()
    results = suite.evaluate(module)
    done = time.perf_counter()
    return {
        "checkpoint": str(ckpt.resolve()), "checkpoint_sha256": file_sha256(ckpt),
        "model": type(module.generator).__module__.rsplit(".", 1)[-1],
        "conditional": module.conditional, "data": data_source, "device": str(device),
        "seconds": {"prepare": round(prepared - start, 2), "evaluate": round(done - prepared, 2)},
        "settings": suite.settings,
        "metrics": {r.name: r.record() for r in results},
        "_results": results,
    }


def write(report: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    results = report.pop("_results")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"evaluation_{stem}.json", out_dir / f"evaluation_{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    settings = report["settings"]
    lines = [f"# Evaluation of `{report['checkpoint']}`", "",
             f"{report['model']}, {settings['n_samples']} generated vs {settings['n_real']} real reference images "
             f"(data: {report['data']}); CIs: bootstrap over the images each number averages "
             f"({settings['bootstrap']} resamples). Took {sum(report['seconds'].values()):.1f} s "
             f"on {report['device']}.",
             "", markdown_table(results, settings["confidence"])]
    md_path.write_text("\n".join(lines))
    return json_path, md_path


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@entry_point
def main(cfg: DictConfig) -> None:
    report = evaluate(cfg)
    ckpt = Path(str(cfg.ckpt)).expanduser()
    out_dir = Path(cfg.out).expanduser() if cfg.get("out") else run_dir_of(ckpt)
    results = report["_results"]
    json_path, md_path = write(report, out_dir, ckpt.stem)
    print(markdown_table(results, report["settings"]["confidence"]))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
