"""Which pixel-scale statistics tell synthetic images from real ones? A readable companion to diagnose.py.

    python experiments/synthetic_utility/texture_stats.py --synthetic <generate output> --real <oracle set>

diagnose.py's `texture` view shows that a CNN tells the two sets apart from the pixel-scale residual alone
(image minus its 1-px Gaussian blur). This script names what it could be reading. Per image, inside the brain
(pixels above diagnose.DARK), it measures the residual's log SD, skewness and kurtosis, and its correlation
with itself shifted by (dy, dx) for the offsets in OFFSETS: the residual's local correlation structure.
Per class it prints each statistic's mean and SD in both sets and the standardised difference d (Cohen's d,
synthetic minus real), and a C2ST that sees only these few numbers: a logistic regression trained on half of
each set, balanced accuracy on the other halves (0.5 = indistinguishable). If this small C2ST is near the
CNN's, the listed statistics carry the cue; if it is near 0.5, the cue lies in higher-order structure.

Writes <out>/texture_stats.json and prints a markdown summary (README block with --readme).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(HERE))
from diagnose import DARK, gaussian_blur, load_sets, save_result  # noqa: E402
from readme_block import check_block  # noqa: E402

OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))
NAMES = ["log sd", "skewness", "kurtosis"] + [f"corr {dy},{dx}" for dy, dx in OFFSETS]


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (N, H, W) moved so that out[:, i, j] = x[:, i + dy, j + dx]; wrapped pixels are masked by the caller."""
    return torch.roll(x, shifts=(-dy, -dx), dims=(1, 2))


def texture_features(u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> float (N, len(NAMES)): the residual statistics above, inside each image's brain."""
    x = u8.float()
    residual = (x - gaussian_blur(x))[:, 0]
    inside = u8[:, 0] > DARK
    h, w = inside.shape[1:]
    border = torch.zeros(h, w, dtype=torch.bool)
    border[2:-2, 2:-2] = True  # no pixel whose shifted partner wrapped around
    inside = inside & border

    def masked_mean(v, m):
        return (v * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp(min=1)

    mean = masked_mean(residual, inside)
    centred = residual - mean[:, None, None]
    var = masked_mean(centred ** 2, inside).clamp(min=1e-6)
    z = centred / var.sqrt()[:, None, None]
    columns = [0.5 * var.log(), masked_mean(z ** 3, inside), masked_mean(z ** 4, inside)]
    for dy, dx in OFFSETS:
        both = inside & shifted(inside, dy, dx)
        columns.append(masked_mean(z * shifted(z, dy, dx), both))
    return torch.stack(columns, dim=1)


def logistic_c2st(a: torch.Tensor, b: torch.Tensor, seed: int) -> float:
    """Balanced accuracy of an L2-regularised logistic regression telling rows of a from rows of b, trained
    on a random half of each, scored on the other halves (features standardised on the training half)."""
    g = torch.Generator().manual_seed(seed)
    pa, pb = torch.randperm(len(a), generator=g), torch.randperm(len(b), generator=g)
    ha, hb = len(a) // 2, len(b) // 2
    x_train = torch.cat([a[pa[:ha]], b[pb[:hb]]])
    y_train = torch.cat([torch.ones(ha), torch.zeros(hb)])
    mu, sd = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    x_train = (x_train - mu) / sd
    w = torch.zeros(a.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    weight = torch.where(y_train > 0, 0.5 / ha, 0.5 / hb)  # each set weighs half, whatever its size
    opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(x_train @ w + bias, y_train, reduction="none")
                * weight).sum() + 1e-3 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        hit_a = (((a[pa[ha:]] - mu) / sd) @ w + bias > 0).float().mean()
        hit_b = (((b[pb[hb:]] - mu) / sd) @ w + bias <= 0).float().mean()
    return float((hit_a + hit_b) / 2)


def compare(real, synthetic, class_names: list[str], seeds=(0, 1)) -> dict:
    """Per class: each statistic's real / synthetic mean and SD and Cohen's d, and the logistic C2ST."""
    out = {}
    for label, name in enumerate(class_names):
        fr = texture_features(real.images[real.labels == label])
        fs = texture_features(synthetic.images[synthetic.labels == label])
        if len(fr) < 4 or len(fs) < 4:
            continue
        pooled = ((fr.var(0) + fs.var(0)) / 2).sqrt().clamp(min=1e-6)
        d = (fs.mean(0) - fr.mean(0)) / pooled
        c2st = [logistic_c2st(fr, fs, s) for s in seeds]
        out[name] = {"n": [len(fr), len(fs)], "c2st": c2st,
                     "stats": {k: {"real": [float(fr[:, j].mean()), float(fr[:, j].std())],
                                   "synthetic": [float(fs[:, j].mean()), float(fs[:, j].std())], "d": float(d[j])}
                               for j, k in enumerate(NAMES)}}
    return out


def markdown(result: dict) -> str:
    classes = result["classes"]
    lines = [f"Residual (image − 1-px blur) statistics inside the brain; real = {result['real']}, synthetic = "
             f"{result['synthetic']}. Each cell: real mean / synthetic mean (d = standardised difference).", "",
             "| statistic | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for k in NAMES:
        cells = []
        for c in classes:
            s = classes[c]["stats"][k]
            cells.append(f"{s['real'][0]:+.3f} / {s['synthetic'][0]:+.3f} (d {s['d']:+.2f})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    c2 = [f"{sum(v['c2st']) / len(v['c2st']):.3f}" for v in classes.values()]
    lines.append(f"| **logistic C2ST on these {len(NAMES)} numbers** | " + " | ".join(c2) + " |")
    lines += ["", f"`{result['command']}` ({result['wall_minutes']:.1f} min, cpu)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", required=True, help="a class-balanced ganlab.generate output")
    parser.add_argument("--real", required=True, help="new real images in generate's layout (oracle.py)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", required=True, help="folder for texture_stats.json")
    parser.add_argument("--readme", metavar="BLOCK", help="also write the summary into README.md's block BLOCK")
    args = parser.parse_args()
    if args.readme:
        check_block(HERE / "README.md", args.readme)
    start = time.time()
    class_names, real, synthetic = load_sets(args.real, args.synthetic)
    classes = compare(real, synthetic, class_names, [int(s) for s in args.seeds.split(",")])
    if not classes:
        raise SystemExit(f"error: no class has 4 images in both {args.real} and {args.synthetic}")
    result = {"classes": classes, "real": args.real, "synthetic": args.synthetic,
              "command": "python experiments/synthetic_utility/texture_stats.py " + " ".join(sys.argv[1:]),
              "wall_minutes": (time.time() - start) / 60, "date": time.strftime("%Y-%m-%d")}
    save_result(Path(args.out) / "texture_stats.json", result, markdown(result), args.readme)


if __name__ == "__main__":
    main()
