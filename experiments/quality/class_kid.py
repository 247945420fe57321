"""Does the generator draw each class, or its training images? Per-class KID against new real renders.

The ladder's per-class KID (metrics/kid_domain/<class>) compares a class's generated images with its training
images. For the rare class those are 22, so the figure rewards samples that sit on them: a generator that
reproduced the 22 images would score as well as the images themselves (README, session 6), and the estimate
rests on subsets of 22. brainsim renders as many new real images of a class as needed, so here, per class and
in the feature space of each domain classifier (`--space-seeds`, the ladder's 0 first):
- generated: `--per-class` samples of the class (uniform labels) against `--per-class` new renders;
- training images: the class's training images themselves against the same new renders (what a generator that
  reproduced them, and nothing else, would score);
- real draw: a second, disjoint set of new renders against the first (a perfect generator's figure);
- generated vs training images: the ladder's comparison, for reading beside the others.
KID is the unbiased estimator (ganlab.metrics.kid), so its expectation does not depend on n; each figure is the
mean over the feature spaces. Beside the KIDs, where the domain classifier puts each class's samples and its new
renders (`judged`: the share given to each class, mean over the spaces): which class a class's samples drift to.

    python experiments/quality/class_kid.py <run dir> [<run dir> ...] [--per-class 500] [--render-seed 9000]
    python experiments/quality/class_kid.py --record             # target.py's and budget.py's runs lacking it
    python experiments/quality/class_kid.py                      # the README table again from results/

Appends one record per run to results/class_kid.jsonl and rewrites the README's class_kid block (the last
record of each run). With --record, the runs of results/target.jsonl and budget.jsonl whose checkpoints are
still there (each folder's latest run) and lack the figures also get them in their own record (`kid_new_class`,
`kid_new_real_draw`: generated and real draw per class), which target.py's checks read, and the README's target
table is rewritten with them. A diagnosis, not a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from fd_floor import render_pool, suite_for  # noqa: E402
from readme_block import check_block, write_block  # noqa: E402
from run import RARE, fmt, group_tag, keep, read_records, runs_on_disk, write_records  # noqa: E402
from target import rare_over_common, readme_table  # noqa: E402
from ganlab.checkpoint import load_gan  # noqa: E402
from ganlab.metrics.kid import kernel_distance  # noqa: E402
from ganlab.run_data import holdout_split, prepared_datamodule, training_data  # noqa: E402

FIGURES = ("generated", "training_images", "real_draw", "generated_vs_training")


def class_figures(new: torch.Tensor, new_other: torch.Tensor, train: torch.Tensor, generated: torch.Tensor,
                  seed: int) -> dict[str, float]:
    """One class's KIDs in one feature space (features as rows); see the module docstring."""
    def kid(a, b, offset):
        return kernel_distance(a, b, subset_size=1000, subsets=100, seed=seed + offset)[0]
    return {"generated": kid(new, generated, 0), "training_images": kid(new, train, 1),
            "real_draw": kid(new, new_other, 2), "generated_vs_training": kid(train, generated, 3)}


def judged_shares(logits: torch.Tensor, n_classes: int) -> list[float]:
    """The share of images the classifier gives to each class (argmax of its logits)."""
    counts = torch.bincount(logits.argmax(1), minlength=n_classes).float()
    return (counts / counts.sum()).tolist()


def measure(run_dir: Path, per_class: int, render_seed: int, pools: dict, pool_root: Path,
            space_seeds: tuple[int, ...], ckpt_name: str = "last") -> dict:
    """The figures of the run's checkpoints/<ckpt_name>.ckpt; `pools` keeps the new renders per image size for the
    next run."""
    ckpt = run_dir / "checkpoints" / f"{ckpt_name}.ckpt"
    module, _ = load_gan(ckpt)
    data_cfg, _ = training_data(ckpt)
    datamodule = prepared_datamodule(data_cfg)
    train, names = datamodule.datasets["train"], list(datamodule.class_names)
    holdout = datamodule.datasets[holdout_split(datamodule)]
    size = data_cfg["image_size"]
    if size not in pools:
        pools[size] = render_pool(size, 2 * per_class, render_seed, pool_root / str(size))
    pool = pools[size]
    per_space, judged_per_space = {}, []
    for space_seed in space_seeds:
        suite = suite_for(ckpt, space_seed)
        suite.prepare(train.images, train.labels, names, holdout=(holdout.images, holdout.labels), generator=module)
        space = suite.ctx.space("domain")
        train_feats = space.of("train")[0]
        figures, judged = {}, {}
        for c, name in enumerate(names):
            g = torch.Generator().manual_seed(1000 + c)  # the same latents in every space and run
            z = torch.randn(per_class, module.latent_dim, generator=g)
            fake = torch.cat([module.sample(len(chunk), labels=torch.full((len(chunk),), c), z=chunk)
                              for chunk in z.split(256)])
            (new, new_logits), (new_other, _), (generated, logits) = (
                suite.ctx.embed(space.net, images) for images in (pool[c][:per_class], pool[c][per_class:], fake))
            figures[name] = class_figures(new, new_other, train_feats[train.labels.cpu() == c], generated,
                                          seed=space_seed)
            judged[name] = {"generated": judged_shares(logits, len(names)),
                            "new_renders": judged_shares(new_logits, len(names))}
        per_space[str(space_seed)] = figures
        judged_per_space.append(judged)
    mean = {name: {f: statistics.mean(s[name][f] for s in per_space.values()) for f in FIGURES} for name in names}
    judged = {name: {kind: [statistics.mean(j[name][kind][k] for j in judged_per_space) for k in range(len(names))]
                     for kind in ("generated", "new_renders")} for name in names}
    return {"run": str(run_dir.resolve()), **({"ckpt": ckpt_name} if ckpt_name != "last" else {}),
            "per_class": per_class, "render_seed": render_seed, "judged": judged,
            "n_train": {name: int((train.labels == c).sum()) for c, name in enumerate(names)},
            "kid": mean, "spaces": per_space}


def table(records: list[dict]) -> str:
    """The README block: the last record of each run, in the order first measured (KIDs x 100)."""
    last = {(r["run"], r.get("ckpt", "last"), r.get("group")): r for r in records}  # a group: another machine's run
    lines = ["| run | generated vs new renders (per class, x100) | real draw vs new renders | rare: generated / its "
             "training images / generated vs them | rare / common mean, generated |",
             "|---|---|---|---|---|"]
    for r in last.values():
        k = r["kid"]
        per = lambda f: " / ".join(fmt(100 * v[f], ".2f") for v in k.values())  # noqa: E731
        rare = k.get(RARE)
        rare_cells = " / ".join(fmt(100 * rare[f], ".2f") for f in ("generated", "training_images",
                                                                    "generated_vs_training")) if rare else "–"
        name = Path(r["run"]).name + (f" ({r['ckpt']})" if "ckpt" in r else "") + group_tag(r)
        lines.append(f"| {name} | {per('generated')} | {per('real_draw')} | {rare_cells} | "
                     f"{fmt(rare_over_common({c: v['generated'] for c, v in k.items()}), '.1f')} |")
    spaces = "/".join(sorted({str(len(r["spaces"])) for r in last.values()}))
    n = "/".join(sorted({str(r["per_class"]) for r in last.values()}))
    lines += ["", f"Classes in the order {' / '.join(next(iter(last.values()))['kid']) if last else ''}; mean over "
              f"{spaces} domain-classifier feature space(s); {n} generated images and {n} new renders per class, a "
              "second disjoint set of new renders for the real draw. `python experiments/quality/class_kid.py <run "
              "dirs>` (results/class_kid.jsonl)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--record", action="store_true",
                        help="also measure target.py's and budget.py's runs that lack the figures, into their records")
    parser.add_argument("--per-class", type=int, default=500, help="generated images and new renders per class")
    parser.add_argument("--render-seed", type=int, default=9000)
    parser.add_argument("--space-seeds", default="0,1,2", help="domain classifier seeds, the ladder's (0) first")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "class_kid.jsonl")
    parser.add_argument("--ckpt", default="last",
                        help="the runs' checkpoints/<ckpt>.ckpt, e.g. ema10kimg (ema_length.py)")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md", help="whose class_kid block to rewrite")
    args = parser.parse_args()
    check_block(args.readme, "class_kid")
    missing = [str(r) for r in args.runs if not (r / "checkpoints" / f"{args.ckpt}.ckpt").is_file()]
    if missing:
        sys.exit(f"error: no checkpoints/{args.ckpt}.ckpt in {', '.join(missing)}")
    torch.set_grad_enabled(False)
    seeds = tuple(int(x) for x in args.space_seeds.split(","))
    results = [HERE / "results" / name for name in ("target.jsonl", "budget.jsonl")] if args.record else []
    pools: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        def one(run_dir: Path, ckpt_name: str = "last", group: str | None = None) -> dict:
            r = measure(run_dir, args.per_class, args.render_seed, pools, Path(tmp), seeds, ckpt_name)
            if group:  # target.py / budget.py --group: session 34's grouped runs share folder names with ungrouped ones
                r["group"] = group
            print(table([r]).splitlines()[2], flush=True)
            keep(r, [], args.out)
            return r

        for run_dir in args.runs:
            one(run_dir, args.ckpt)
        for path in results:
            records = read_records(path)
            for record in runs_on_disk(records):
                if "kid_new_class" not in record:
                    r = one(Path(record["run_dir"]), group=record.get("group"))
                    record["kid_new_class"] = {c: v["generated"] for c, v in r["kid"].items()}
                    record["kid_new_real_draw"] = {c: v["real_draw"] for c, v in r["kid"].items()}
                    write_records(path, records)
    if args.record:  # target.py's table shows the figures just added to its records
        write_block(HERE / "README.md", "target", readme_table(read_records(HERE / "results" / "target.jsonl")))
    records = read_records(args.out)
    if records:
        write_block(args.readme, "class_kid", table(records))


if __name__ == "__main__":
    main()
