"""Why do synthetic images help a classifier less than new real ones? Two measurements against an oracle set.

    python experiments/synthetic_utility/diagnose.py --synthetic <generate output> --real <oracle set> [--seeds 0,1,2]

`--real` is a set of new real images in generate's layout (run.py --oracle writes one: <run>/synthetic_balanced),
`--synthetic` a class-balanced generate output of the same data. Per seed, each set is split in halves per class.

1. **Balanced judge.** A SmallCNN (the benchmark's recipe) trained on one half of the real set, where every class
   is equally large, so unlike a judge fitted on the 22 rare training images it has no rare-class bias. It labels
   the other half of the real set and all synthetic images: per class, the share put in each class, and the mean
   predicted severity (the class index 0-3 weighted by the softmax). A synthetic class that leans to a neighbour
   differs in content.
2. **Classifier two-sample test** (C2ST; Lopez-Paz & Oquab, ICLR 2017; ganlab.metrics.c2st). The same network
   trained to tell real from synthetic on one half of each set, scored on the other halves: balanced accuracy per
   class, 0.5 = indistinguishable. A high score is a "synthetic look" that a classifier can take as a cue for
   whatever class synthetic images fill.

3. **What the detector sees** (`--views raw,blur,texture,silhouette,dark0`): the same C2ST on transformed copies
   of both sets, each view keeping one kind of cue: `blur` a Gaussian blur (sigma 1 px; the anatomy without
   the pixel-scale noise), `texture` the image minus its blur (only the pixel-scale noise, x4 around grey),
   `silhouette` the brain mask (pixels above 8/255), `dark0` the image with every pixel at or below 8/255 set
   to 0 (no faint background). A view at ~0.5 holds no cue; one that stays near the raw score holds it.

Writes <out>/diagnose.json and prints a markdown summary (the README's `diagnose` block with --readme).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "experiments"))
from readme_block import check_block, write_block  # noqa: E402

from ganlab.classifier import gaussian_blur  # noqa: E402

RECIPE = {"width": 16, "epochs": 8}
DARK = 8  # uint8 level: at or below it a pixel counts as background (brainsim's background is exactly 0)


def round_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float grey levels (0-255 scale, not ganlab.pixels' [-1, 1]) -> uint8."""
    return x.round().clamp(0, 255).to(torch.uint8)


VIEWS = {
    "raw": lambda u8: u8,
    "blur": lambda u8: round_to_uint8(gaussian_blur(u8.float())),
    "texture": lambda u8: round_to_uint8(128 + 4 * (u8.float() - gaussian_blur(u8.float()))),
    "silhouette": lambda u8: (u8 > DARK).to(torch.uint8) * 255,
    "dark0": lambda u8: torch.where(u8 > DARK, u8, torch.zeros_like(u8)),
}


def label_shares(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Per true class: the share of its images predicted as each class, and the mean predicted severity."""
    pred = probs.argmax(1)
    severity = probs @ torch.arange(num_classes, dtype=probs.dtype)
    out = {}
    for c in range(num_classes):
        mask = labels == c
        out[c] = {"predicted": torch.bincount(pred[mask], minlength=num_classes).div(int(mask.sum())).tolist(),
                  "severity": float(severity[mask].mean())}
    return out


def diagnose_seed(real, synthetic, num_classes: int, seed: int, recipe=RECIPE, views=()) -> dict:
    from ganlab.classifier import predict, train_classifier
    from ganlab.metrics.c2st import halves, two_sample_test

    g = torch.Generator().manual_seed(seed)
    real_a, real_b = halves(real.labels, num_classes, g)
    synth_a, synth_b = halves(synthetic.labels, num_classes, g)
    judge = train_classifier(real.images[real_a], real.labels[real_a], num_classes, width=recipe["width"],
                             epochs=recipe["epochs"], batch_size=recipe.get("batch_size", 64), seed=seed)
    judged = {"real": label_shares(predict(judge, real.images[real_b]).softmax(1), real.labels[real_b], num_classes),
              "synthetic": label_shares(predict(judge, synthetic.images).softmax(1), synthetic.labels, num_classes)}

    def c2st_on(view: str) -> dict[int, float]:  # C2ST on the same halves as the judge (ganlab.metrics.c2st)
        return two_sample_test(VIEWS[view](real.images), real.labels, VIEWS[view](synthetic.images), synthetic.labels,
                               num_classes, seed=seed, width=recipe["width"], epochs=recipe["epochs"],
                               batch_size=recipe.get("batch_size", 64), split=((real_a, real_b), (synth_a, synth_b)))

    c2st = c2st_on("raw")
    by_view = {view: c2st if view == "raw" else c2st_on(view) for view in views}
    return {"seed": seed, "judge": judged, "c2st": c2st, **({"c2st_views": by_view} if views else {})}


def summary(rows: list[dict], class_names: list[str]) -> dict:
    def mean_sd(values):
        t = torch.tensor(values, dtype=torch.float64)
        return {"mean": float(t.mean()), "sd": float(t.std()) if len(t) > 1 else 0.0}

    out = {"seeds": [r["seed"] for r in rows], "classes": {}}
    for c, name in enumerate(class_names):
        entry = {"c2st_accuracy": mean_sd([r["c2st"][c] for r in rows])}
        if "c2st_views" in rows[0]:
            entry["c2st_views"] = {v: mean_sd([r["c2st_views"][v][c] for r in rows]) for v in rows[0]["c2st_views"]}
        for which in ("real", "synthetic"):
            shares = torch.tensor([r["judge"][which][c]["predicted"] for r in rows]).mean(0).tolist()
            entry[which] = {"predicted": dict(zip(class_names, shares)),
                            "severity": mean_sd([r["judge"][which][c]["severity"] for r in rows])}
        out["classes"][name] = entry
    return out


def markdown(result: dict) -> str:
    names = list(result["classes"])
    lines = [f"Balanced judge and C2ST, {len(result['seeds'])} seeds (mean ± sd): real = {result['real']} "
             f"(held-out halves), synthetic = {result['synthetic']}.", "",
             "| class | judge: real labelled as | judge: synthetic labelled as | mean severity real / synthetic "
             "(0-3) | C2ST accuracy (0.5 = indistinguishable) |", "|---|---|---|---|---|"]

    def shares(d):
        return ", ".join(f"{k} {v:.0%}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v >= 0.005)

    for name in names:
        e = result["classes"][name]
        lines.append(f"| {name} | {shares(e['real']['predicted'])} | {shares(e['synthetic']['predicted'])} | "
                     f"{e['real']['severity']['mean']:.2f} ± {e['real']['severity']['sd']:.2f} / "
                     f"{e['synthetic']['severity']['mean']:.2f} ± {e['synthetic']['severity']['sd']:.2f} | "
                     f"{e['c2st_accuracy']['mean']:.3f} ± {e['c2st_accuracy']['sd']:.3f} |")
    views = list(result["classes"][names[0]].get("c2st_views", {}))
    if views:
        lines += ["", "C2ST by view (what the detector can still see; 0.5 = nothing):", "",
                  "| class | " + " | ".join(views) + " |", "|---|" + "---|" * len(views)]
        for name in names:
            v = result["classes"][name]["c2st_views"]
            lines.append(f"| {name} | " + " | ".join(f"{v[k]['mean']:.3f} ± {v[k]['sd']:.3f}" for k in views) + " |")
    lines += ["", f"`{result['command']}` ({result['wall_minutes']:.1f} min, {result['device']})"]
    return "\n".join(lines)


def load_sets(real_dir: str, synthetic_dir: str):
    """(class names in the real set's label order, real set, synthetic set labelled in that order)."""
    from ganlab.generate import load_generated, read_manifest

    by_label = {int(r["label"]): r["class"] for r in read_manifest(real_dir)}
    class_names = [by_label[i] for i in sorted(by_label)]
    return class_names, load_generated(real_dir, class_names), load_generated(synthetic_dir, class_names)


def save_result(path: Path, result: dict, text: str, readme_block: str | None) -> None:
    """Write result as JSON to path, text into this folder's README block (if named), and print text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    if readme_block:
        write_block(HERE / "README.md", readme_block, text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", required=True, help="a class-balanced ganlab.generate output")
    parser.add_argument("--real", required=True, help="new real images in generate's layout (run.py --oracle)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--views", default="", help=f"also the C2ST on these views: {','.join(VIEWS)}")
    parser.add_argument("--out", required=True, help="folder for diagnose.json")
    parser.add_argument("--readme", metavar="BLOCK", help="also write the summary into README.md's block BLOCK")
    args = parser.parse_args()
    if args.readme:
        check_block(HERE / "README.md", args.readme)
    views = [v for v in args.views.split(",") if v]
    unknown = sorted(set(views) - set(VIEWS))
    if unknown:
        raise SystemExit(f"error: --views {','.join(unknown)}: choose from {','.join(VIEWS)}")
    start = time.time()
    class_names, real, synthetic = load_sets(args.real, args.synthetic)
    if torch.bincount(synthetic.labels, minlength=len(class_names)).min() < 2:
        raise SystemExit(f"error: {args.synthetic} needs images of every class (generate with n_per_class=N)")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.append(diagnose_seed(real, synthetic, len(class_names), seed, views=views))
        print(f"seed {seed}: C2ST {[round(v, 3) for v in rows[-1]['c2st'].values()]}", flush=True)
    result = {**summary(rows, class_names), "real": args.real, "synthetic": args.synthetic, "rows": rows,
              "command": "python experiments/synthetic_utility/diagnose.py " + " ".join(sys.argv[1:]),
              "wall_minutes": (time.time() - start) / 60, "device": "cpu", "date": time.strftime("%Y-%m-%d")}
    save_result(Path(args.out) / "diagnose.json", result, markdown(result), args.readme)


if __name__ == "__main__":
    main()
