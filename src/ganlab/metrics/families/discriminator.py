"""Is the GAN's own discriminator learning its training images by heart? ADA's validation heuristic r_v
(ganlab.metrics.overfit) during training, from the module's D in eval mode without augmentation:
(E[D(train)] - E[D(held-out)]) / (E[D(train)] - E[D(generated)]). 0: held-out real images score like the
training images; 1: like generated ones. A D that has learned a class's few images pulls G's images of that
class onto them (near-copies in ganlab.audit); this shows it while training runs.

Reported, when the data has a held-out split: metrics/d_overfit/<class> for a conditional model (on a set
of `per_class` generated images of every class, the conditional family's own set when its per_class is the
same, against up to `train_per_class` training images and all held-out images of the class) and
metrics/d_overfit, the mean over classes; for an unconditional D only metrics/d_overfit, with the real
means taken per class and averaged (the held-out split's class mix need not be the training split's). None
(left out) where D scores its training images no higher than generated ones. A rare class's figure rests on
its few held-out images: read it as rough.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.metrics import conditional as cond
from ganlab.metrics.families.conditional import class_key
from ganlab.metrics.overfit import discriminator_logits, overfit_ratio
from ganlab.metrics.protocol import Batch, Context, Family, GeneratorInfo
from ganlab.metrics.report import Result

PANEL, PER_CLASS_PANEL = "discriminator overfitting (r_v)", "discriminator overfitting per class (r_v)"


class DiscriminatorOverfit(Family):
    fields = ("label", "d")

    def __init__(self, per_class: int = 100, train_per_class: int = 500):
        if per_class < 1 or train_per_class < 1:
            raise GanlabError(f"metrics.families.discriminator: per_class={per_class} and train_per_class="
                              f"{train_per_class} must be >= 1")
        self.per_class, self.train_per_class = per_class, train_per_class

    def applies(self, gen: GeneratorInfo, ctx: Context) -> bool:
        return gen.discriminator and ctx.holdout is not None

    def plan(self, ctx: Context) -> Tensor:
        return cond.label_plan(self.per_class * ctx.num_classes, torch.ones(ctx.num_classes), "uniform")

    def prepare(self, ctx: Context) -> None:
        self.ctx = ctx
        k = ctx.num_classes
        keep = torch.cat([torch.nonzero(ctx.labels == c).flatten()[:self.train_per_class] for c in range(k)])
        self.train = (ctx.images[keep], ctx.labels[keep])
        ctx.settings["discriminator"] = {"per_class": self.per_class, "train_per_class": self.train_per_class}

    def bind(self, module) -> None:
        """The real side's mean logits per class under this evaluation's D."""
        self.discriminator, self.conditional = module.discriminator, bool(module.conditional)
        self.real = {}
        for split, (images, labels) in (("train", self.train), ("holdout", self.ctx.holdout)):
            d = discriminator_logits(self.discriminator, images, labels if self.conditional else None,
                                     self.ctx.batch_size)
            self.real[split] = {c: (float(d[labels == c].mean()), int((labels == c).sum()))
                                for c in range(self.ctx.num_classes) if (labels == c).any()}

    def update(self, batch: Batch) -> dict[str, Tensor]:
        d = discriminator_logits(self.discriminator, batch.images, batch.labels if self.conditional else None,
                                 self.ctx.batch_size)
        return {"label": batch.labels, "d": d.to(batch.images.device)}

    def results(self, samples: dict[str, Tensor]) -> list[Result]:
        d, label = samples["d"].float().cpu(), samples["label"].cpu()
        train, holdout = self.real["train"], self.real["holdout"]
        both = [c for c in train if c in holdout]
        n_holdout = sum(holdout[c][1] for c in both)
        if not self.conditional:
            mean = lambda split: sum(split[c][0] for c in both) / len(both) if both else None  # noqa: E731
            r = overfit_ratio(mean(train), mean(holdout), float(d.mean()) if len(d) else None)
            return [] if r is None else [Result("metrics/d_overfit", r, len(d), n_holdout, panel=PANEL, better="lower")]
        out, values = [], []
        for c in both:
            own = d[label == c]
            r = overfit_ratio(train[c][0], holdout[c][0], float(own.mean()) if len(own) else None)
            if r is None:
                continue
            values.append(r)
            out.append(Result(f"metrics/d_overfit/{class_key(self.ctx.class_names[c])}", r, len(own), holdout[c][1],
                              panel=PER_CLASS_PANEL, better="lower"))
        if values:
            out.insert(0, Result("metrics/d_overfit", sum(values) / len(values), len(d), n_holdout, panel=PANEL,
                                 better="lower"))
        return out
