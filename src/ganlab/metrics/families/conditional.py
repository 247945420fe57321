"""Class-conditional generators: does an image generated for class c look like class c?

Per-class figures need per-class samples, so this family draws its own set: `per_class` images of
every class (uniform), whatever the class mix of the shared set (which follows the real mix, so that
FD / PRDC / SSIM compare like with like). Reported:
- metrics/cond_acc: the domain classifier's balanced accuracy on them (CI), beside metrics/cond_acc_real,
  its balanced accuracy on held-out real images (the ceiling);
- per class: metrics/cond_acc/<class> and metrics/cond_acc_real/<class> (held-out reals, with their N),
  metrics/n_fake/<class>, and metrics/kid_domain/<class> against the real training images of that class,
  beside metrics/kid_domain_real/<class>: the same KID for the held-out real images of the class (its
  floor: the judge's features are fitted to the training images, most of all to a rare class's few,
  so even real images of a class sit at a distance from them).
A class on which the classifier is weak on held-out reals is named in a warning at prepare time (its
per-class figures say little) and listed in the settings (classifier.weak_classes).
"""
from __future__ import annotations

import logging
import re

import torch
from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.metrics import conditional as cond
from ganlab.metrics.domain import WEAK_ACCURACY, WEAK_N
from ganlab.metrics.protocol import Batch, Context, Family, GeneratorInfo
from ganlab.metrics.report import Result

log = logging.getLogger("ganlab.metrics")
PANEL, PER_CLASS_PANEL, KID_PANEL = "conditional accuracy", "conditional accuracy per class", "KID per class (domain)"


def class_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class ConditionalAccuracy(Family):
    spaces = ("domain",)
    fields = ("label", "pred", "feat")

    def __init__(self, per_class: int = 100, kid_subset_size: int = 1000, kid_subsets: int = 100):
        if per_class < 2 or kid_subset_size < 2 or kid_subsets < 1:
            raise GanlabError(f"metrics.families.conditional: per_class={per_class} and kid_subset_size="
                              f"{kid_subset_size} must be >= 2, kid_subsets={kid_subsets} >= 1")
        self.per_class, self.kid_subset_size, self.kid_subsets = per_class, kid_subset_size, kid_subsets

    def applies(self, gen: GeneratorInfo, ctx: Context) -> bool:
        return gen.conditional and gen.num_classes == ctx.num_classes

    def plan(self, ctx: Context) -> Tensor:
        k = ctx.num_classes
        return cond.label_plan(self.per_class * k, torch.ones(k), "uniform")

    def prepare(self, ctx: Context) -> None:
        self.ctx, k = ctx, ctx.num_classes
        space = ctx.space("domain")
        self.train_feats = space.of("train")[0]
        held = space.of("holdout")
        self.real, self.real_kids = None, {}
        if held is not None:
            pred, target = held[1].argmax(1), ctx.holdout[1]
            self.real = (cond.balanced_accuracy(pred, target, k), len(target), cond.per_class_accuracy(pred, target, k))
            self.real_kids = cond.per_class_kid(self.train_feats, ctx.labels, held[0], target, k,
                                                self.kid_subset_size, self.kid_subsets, ctx.seed)
        ctx.settings["conditional"] = {"per_class": self.per_class, "n_fake": self.per_class * k}
        info = ctx.settings.get("classifier", {})
        for name in info.get("weak_classes", []) if ctx.announce else []:
            c = info["holdout_per_class"][name]
            log.warning("metrics: per-class figures for class %s say little: the domain classifier's accuracy on "
                        "its held-out real images is %s on N=%d (flagged below %.2f or N < %d)", name,
                        "n/a" if c["accuracy"] is None else f"{c['accuracy']:.2f}", c["n"], WEAK_ACCURACY, WEAK_N)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        feats, logits = batch.features("domain")
        return {"label": batch.labels, "pred": logits.argmax(1), "feat": feats}

    def results(self, samples: dict[str, Tensor]) -> list[Result]:
        pred, label, k, names = samples["pred"], samples["label"], self.ctx.num_classes, self.ctx.class_names
        acc = cond.balanced_accuracy(pred, label, k)
        ci = self.ctx.ci(lambda idx: {"acc": cond.balanced_accuracy(pred[idx], label[idx], k)}, len(label), 4)
        out = [Result("metrics/cond_acc", acc, len(label), None, ci.get("acc"), panel=PANEL, headline=True,
                      better="higher")]
        if self.real is not None:
            out.append(Result("metrics/cond_acc_real", self.real[0], None, self.real[1], panel=PANEL,
                              reference="metrics/cond_acc"))
        real_per_class = self.real[2] if self.real is not None else {}
        for c, (a, n_c) in cond.per_class_accuracy(pred, label, k).items():
            key = class_key(names[c])
            out.append(Result(f"metrics/n_fake/{key}", n_c))
            out.append(Result(f"metrics/cond_acc/{key}", a, n_c, panel=PER_CLASS_PANEL, better="higher"))
            if c in real_per_class:
                a_real, n_real = real_per_class[c]
                out.append(Result(f"metrics/cond_acc_real/{key}", a_real, n_real=n_real, panel=PER_CLASS_PANEL,
                                  reference=f"metrics/cond_acc/{key}"))
        kids = cond.per_class_kid(self.train_feats, self.ctx.labels, samples["feat"], label, k,
                                  self.kid_subset_size, self.kid_subsets, self.ctx.seed)
        for c, v in kids.items():
            key = class_key(names[c])
            out.append(Result(f"metrics/kid_domain/{key}", v["kid"], v["n_fake"], v["n_real"], panel=KID_PANEL,
                              better="lower"))
            if c in self.real_kids:  # held-out reals of the class (n_fake: how many) vs its training images
                floor = self.real_kids[c]
                out.append(Result(f"metrics/kid_domain_real/{key}", floor["kid"], floor["n_fake"], floor["n_real"],
                                  panel=KID_PANEL, reference=f"metrics/kid_domain/{key}"))
        return out
