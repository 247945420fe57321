"""How a real-trained classifier labels the synthetic images, class by class, beside real test images:

    python experiments/synthetic_utility/judge.py <synthetic folder> [--seed 0] [--out judge.json]

The SmallCNN of the benchmark's baseline (real only: class weights, flips/shifts, width 16, 8 epochs)
is trained on the benchmark's real training split (brainsim 64 px, 500/class, ModerateDemented 6%,
data seed 1) and labels (a) the synthetic set and (b) the large balanced real test set. A synthetic
class that the real classifier labels as another class more often than it labels the real images of
that class is a narrower or shifted version of the real class.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ganlab.classifier import SmallCNN, fit_classifier, predict
from ganlab.data.brainsim import BrainSimDataModule
from ganlab.generate import load_generated


def label_mix(logits: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict:
    pred = logits.argmax(1)
    return {names[c]: {names[k]: float((pred[labels == c] == k).float().mean()) for k in range(len(names))}
            for c in range(len(names)) if (labels == c).any()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("synthetic", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", type=Path, default=Path("judge.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    real = BrainSimDataModule(f"{args.data_dir}/brainsim", image_size=64, per_class=500,
                              imbalance={"ModerateDemented": 0.06}, seed=1)
    test = BrainSimDataModule(f"{args.data_dir}/brainsim", image_size=64, per_class=300, test_fraction=0.9,
                              render_seed=1000, batch_size=1, val_fraction=0.0)
    for dm in (real, test):
        dm.prepare_data()
        dm.setup("fit")
    names, train = list(real.class_names), real.datasets["train"]
    synthetic = load_generated(args.synthetic, names)
    torch.manual_seed(args.seed)
    model = fit_classifier(SmallCNN(len(names), 1, 64, width=16), train.images, train.labels, epochs=8,
                           seed=args.seed)
    out = {"synthetic_labelled_as": label_mix(predict(model, synthetic.images), synthetic.labels, names),
           "real_test_labelled_as": label_mix(predict(model, test.datasets["test"].images),
                                              test.datasets["test"].labels, names)}
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
