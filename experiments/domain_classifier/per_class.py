"""Per-class accuracy of the metrics' domain classifier (the judge behind metrics/cond_acc) on real
images it never saw: brainsim at 64 px with ModerateDemented at 7% (data.per_class=500), on the run's
own test split and on a balanced set rendered apart from it (250 per class, render seed 1).

    PYTHONPATH=src python experiments/domain_classifier/per_class.py <data dir> [balance=loss|sampling|none]
        [min_steps=N] [seed=N]

The other settings are conf/metrics/default.yaml's (32 px, width 16, 5 epochs, >= 100 steps); nothing
is cached. Results: experiments/domain_classifier/README.md.
"""
from __future__ import annotations

import sys
import time

import torch

from ganlab.data.brainsim import BrainSimDataModule
from ganlab.metrics.domain import DomainFeatures, train_domain_classifier


def load(data_dir: str, **kwargs) -> BrainSimDataModule:
    dm = BrainSimDataModule(f"{data_dir}/brainsim", image_size=64, batch_size=64, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def main(data_dir: str, *overrides: str) -> None:
    torch.set_num_threads(1)
    options = dict(image_size=32, width=16, epochs=5, min_steps=100, seed=0, balance="sampling")
    for item in overrides:
        key, value = item.split("=", 1)
        options[key] = int(value) if value.isdigit() else value
    dm = load(data_dir, per_class=500, imbalance={"ModerateDemented": 0.07})
    balanced = load(data_dir, per_class=250, test_fraction=0.0, render_seed=1)
    train = dm.datasets["train"]
    start = time.perf_counter()
    model, _ = train_domain_classifier(train.images, train.labels, dm.num_classes, cache_dir=None, **options)
    print(f"{options}: trained in {time.perf_counter() - start:.1f} s on {torch.bincount(train.labels).tolist()}")
    net = DomainFeatures(model)
    for name, ds in (("test split", dm.datasets["test"]), ("balanced render", balanced.datasets["train"])):
        with torch.no_grad():
            pred = torch.cat([net(ds.images[i:i + 256])[1].argmax(1) for i in range(0, len(ds), 256)])
        accs = []
        for c, cname in enumerate(dm.class_names):
            mask = ds.labels == c
            accs.append(float((pred[mask] == c).float().mean()))
            print(f"  {name:16s} {cname:17s} accuracy {accs[-1]:.3f}  N {int(mask.sum())}")
        print(f"  {name:16s} balanced accuracy {sum(accs) / len(accs):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
