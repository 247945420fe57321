"""MetricSuite: every sample-quality metric of ganlab, shared by the training callback and
`ganlab.evaluate`. `prepare()` computes the real side once (domain classifier, reference features,
k-NN radii, SSIM reference, real-vs-real baselines); `evaluate(module)` generates N images (split
over processes), gathers per-sample results across processes and returns a list of `Result`s.

Names (stable, also used as W&B keys): metrics/fd_domain, metrics/fd_domain_real, metrics/kid_domain,
metrics/precision|recall|density|coverage, ssim/nearest_real, ssim/diversity, ssim/diversity_real,
ssim/ms_diversity, ssim/ms_diversity_real, metrics/cond_acc, metrics/cond_acc_real,
metrics/cond_acc/<class>, metrics/kid_domain/<class>, metrics/fid, metrics/kid, metrics/is.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable

import torch
from torch import Tensor

from ganlab.classifier import SmallCNN
from ganlab.errors import GanlabError
from ganlab.metrics import conditional as cond
from ganlab.metrics import ssim as ssim_lib
from ganlab.metrics.bootstrap import bootstrap_cis, mean_ci
from ganlab.metrics.domain import DomainFeatures, train_domain_classifier
from ganlab.metrics.frechet import FrechetReference
from ganlab.metrics.inception import InceptionFeatures, inception_score, resolve_weights
from ganlab.metrics.kid import kernel_distance
from ganlab.metrics.prdc import NAMES as PRDC_NAMES, PRDC
from ganlab.metrics.report import Result
from ganlab.metrics.store import SampleStore


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@contextmanager
def cpu_threads(n: int | None, device: torch.device):
    """Torch's intra-op threads limited to n while metrics run on the CPU. Measured on a 2-core machine
    shared with other jobs: the metrics' small convolutions ran 2-9x slower with 2 threads than with 1
    (threads wait for cores that are busy elsewhere); restored afterwards."""
    if n is None or device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class MetricSuite:
    def __init__(self, n_samples: int = 512, n_real: int | None = None, batch_size: int = 128, seed: int = 0,
                 bootstrap: int = 100, confidence: float = 0.95, fake_labels: str = "proportional",
                 domain: bool = True, classifier_size: int | None = 32, classifier_width: int = 16,
                 classifier_epochs: int = 5, classifier_min_steps: int = 100, cache_dir: str | None = None,
                 ssim: bool = True, ssim_samples: int = 128, ssim_candidates: int = 8, ssim_pairs: int = 64,
                 ssim_reference: int = 2048, prdc: bool = True, prdc_k: int = 5, prdc_space: str = "domain",
                 kid_subset_size: int = 1000, kid_subsets: int = 100, inception: bool = False,
                 inception_weights: str | None = None, on_missing_weights: str = "skip", antialias: bool = False,
                 cpu_threads: int | None = 1):
        checks = {"n_samples": n_samples >= 4, "batch_size": batch_size >= 2, "bootstrap": bootstrap >= 0,
                  "confidence": 0 < confidence < 1, "fake_labels": fake_labels in ("proportional", "uniform"),
                  "prdc_space": prdc_space in ("domain", "inception"), "prdc_k": prdc_k >= 1,
                  "kid_subset_size": kid_subset_size >= 2, "ssim_samples": ssim_samples >= 1,
                  "ssim_pairs": ssim_pairs >= 1, "on_missing_weights": on_missing_weights in ("skip", "error")}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise GanlabError(f"metrics.{bad[0]}={locals()[bad[0]]!r} is not valid")
        if prdc and prdc_space == "domain" and not domain:
            raise GanlabError("metrics.prdc_space=domain needs metrics.domain=true (or prdc_space=inception)")
        if not (domain or ssim or inception):
            raise GanlabError("metrics: every metric family is off; use metrics=none instead")
        self.n_samples, self.n_real, self.batch_size, self.seed = n_samples, n_real, batch_size, seed
        self.bootstrap, self.confidence, self.fake_labels = bootstrap, confidence, fake_labels
        self.domain_on, self.ssim_on, self.prdc_on, self.inception_on = domain, ssim, prdc, inception
        self.classifier_args = dict(image_size=classifier_size, width=classifier_width, epochs=classifier_epochs,
                                    min_steps=classifier_min_steps, seed=seed, cache_dir=cache_dir)
        self.ssim_samples, self.ssim_candidates, self.ssim_pairs = ssim_samples, ssim_candidates, ssim_pairs
        self.ssim_reference, self.prdc_k, self.prdc_space = ssim_reference, prdc_k, prdc_space
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets
        self.inception_weights, self.on_missing_weights = inception_weights, on_missing_weights
        self.antialias, self.cpu_threads = antialias, cpu_threads
        self.prepared = False
        self.settings: dict = {}

    # ------------------------------------------------------------------ real side, once
    def prepare(self, images: Tensor, labels: Tensor, class_names: list[str],
                holdout: tuple[Tensor, Tensor] | None = None, device: str | torch.device = "cpu",
                rank: int = 0, world: int = 1, broadcast: Callable | None = None) -> None:
        """`images`/`labels`: the real training split (uint8); `holdout`: real images the classifier never saw.
        Network construction draws random numbers: the caller's global RNG stream is left as it was."""
        device = torch.device(device)
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), torch.no_grad(), \
                cpu_threads(self.cpu_threads, device):
            self._prepare(images, labels, class_names, holdout, device, rank, world, broadcast)

    def _prepare(self, images, labels, class_names, holdout, device, rank, world, broadcast) -> None:
        self.device, self.rank, self.world = device, rank, world
        if self.n_samples < 2 * world:
            raise GanlabError(f"metrics.n_samples={self.n_samples} is too small for {world} processes")
        self.class_names, self.num_classes = list(class_names), len(class_names)
        g = torch.Generator().manual_seed(self.seed)
        ref_idx = torch.randperm(len(labels), generator=g)[: self.n_real or self.n_samples]
        ref, self.ref_labels = images[ref_idx], labels[ref_idx].cpu()
        self.image_size = images.shape[-1]
        self.settings = {"n_samples": self.n_samples, "n_real": len(ref), "fake_labels": self.fake_labels,
                         "bootstrap": self.bootstrap, "confidence": self.confidence, "seed": self.seed}
        fields = ["label"]
        if self.domain_on:
            self._prepare_domain(images, labels, ref, holdout, broadcast)
            fields += ["domain_feat", "domain_pred"]
        if self.ssim_on:
            self._prepare_ssim(images, ref, g)
            fields += ["nearest", "pair_ssim", "pair_ms"]
        if self.inception_on and self._prepare_inception(ref):
            fields += ["incep_pool", "incep_logits"]
        if self.prdc_on:
            space = self.prdc_space if (self.prdc_space == "domain" or self.inception_on) else "domain"
            if space == "domain" and not self.domain_on:
                self.prdc_on = False  # inception PRDC asked for, Inception skipped, no domain space either
            else:
                self.prdc = PRDC(self.real_feats[space], self.prdc_k)
                self.settings.update(prdc_space=space, prdc_k=self.prdc.k)
        self.store = SampleStore(tuple(fields)).to(self.device)
        self.prepared = True

    def _features(self, net, images: Tensor) -> list[Tensor]:
        outs = [net(images[i:i + self.batch_size].to(self.device)) for i in range(0, len(images), self.batch_size)]
        return [torch.cat([o[j] for o in outs]).cpu() for j in range(len(outs[0]))]

    def _prepare_domain(self, images, labels, ref, holdout, broadcast) -> None:
        payload = None
        if self.rank == 0:
            model, info = train_domain_classifier(images, labels, self.num_classes, device=self.device,
                                                  **self.classifier_args)
            payload = (model.state_dict(), info)
        if self.world > 1 and broadcast is not None:
            payload = broadcast(payload)  # every process uses rank 0's classifier
        state, info = payload
        model = SmallCNN(self.num_classes, images.shape[1], info["image_size"], width=info["width"])
        model.load_state_dict(state)
        self.domain = DomainFeatures(model).to(self.device)
        feats, logits = self._features(self.domain, ref)
        self.real_feats = {"domain": feats}
        self.fd_ref = FrechetReference(feats)
        self.baselines = {}
        if holdout is not None and len(holdout[1]) >= 2:
            h_feats, h_logits = self._features(self.domain, holdout[0])
            self.baselines["fd_domain_real"] = (self.fd_ref.distance(h_feats), len(h_feats))
            acc = cond.balanced_accuracy(h_logits.argmax(1), holdout[1], self.num_classes)
            self.baselines["cond_acc_real"] = (acc, len(h_feats))
            info["holdout_balanced_accuracy"] = round(acc, 4)
        self.settings["classifier"] = info

    def _prepare_ssim(self, images, ref, g) -> None:
        idx = torch.randperm(len(images), generator=g)[: self.ssim_reference]
        self.ssim_ref = ssim_lib.as_float(images[idx], self.device)
        self.ms_betas = ssim_lib.ms_ssim_betas(self.image_size)
        real_pairs = ssim_lib.as_float(ref[: 2 * self.ssim_pairs], self.device)
        s, ms = ssim_lib.pairwise(real_pairs, self.ssim_pairs, self.ms_betas)
        self.ssim_real = {"ssim/diversity_real": (s.cpu(), len(s)), "ssim/ms_diversity_real": (ms.cpu(), len(ms))}
        self.settings.update(ssim_reference=len(idx), ssim_candidates=self.ssim_candidates,
                             ms_ssim_betas=[round(b, 4) for b in self.ms_betas], ssim_data_range=ssim_lib.DATA_RANGE)

    def _prepare_inception(self, ref) -> bool:
        path = resolve_weights(self.inception_weights, self.on_missing_weights, announce=self.rank == 0)
        if path is None:
            self.inception_on = False
            self.settings["inception"] = "skipped: weights not found"
            return False
        self.inception = InceptionFeatures(path, antialias=self.antialias).to(self.device)
        pool, _ = self._features(self.inception, ref)
        self.real_feats = {**getattr(self, "real_feats", {}), "inception": pool}
        self.fid_ref = FrechetReference(pool)
        self.settings["inception"] = {"weights": str(path), "antialias": self.antialias}
        return True

    # ------------------------------------------------------------------ generated side, every evaluation
    @torch.no_grad()
    def update(self, fake: Tensor, labels: Tensor) -> None:
        fields = {"label": labels.to(self.device)}
        if self.domain_on:
            feats, logits = self.domain(fake)
            fields.update(domain_feat=feats, domain_pred=logits.argmax(1))
        if self.ssim_on:
            take = min(self._ssim_left, len(fake))
            if take:
                fields["nearest"] = ssim_lib.nearest_real_ssim(fake[:take], self.ssim_ref, self.ssim_candidates)[0]
                self._ssim_left -= take
            pairs = min(self._pairs_left, len(fake) // 2)
            if pairs:
                fields["pair_ssim"], fields["pair_ms"] = ssim_lib.pairwise(fake, pairs, self.ms_betas)
                self._pairs_left -= pairs
        if self.inception_on:
            fields["incep_pool"], fields["incep_logits"] = self.inception(fake)
        self.store.update(**fields)

    def plan(self, latent_dim: int, num_classes: int) -> tuple[Tensor, Tensor]:
        """The same latent vectors and requested labels at every evaluation (comparable across epochs)."""
        z = torch.randn(self.n_samples, latent_dim, generator=torch.Generator().manual_seed(self.seed))
        if num_classes == self.num_classes:
            counts = torch.bincount(self.ref_labels, minlength=self.num_classes)
            return z, cond.label_plan(self.n_samples, counts, self.fake_labels)
        return z, cond.label_plan(self.n_samples, torch.ones(max(num_classes, 1)), "uniform")

    def evaluate(self, module) -> list[Result]:
        """Generate this process's share of N images with `module.sample(n, labels, z)` and compute every
        metric from all processes' samples. Call on every process at the same time."""
        if not self.prepared:
            raise RuntimeError("MetricSuite.prepare() must run before evaluate()")
        with torch.no_grad(), cpu_threads(self.cpu_threads, self.device):
            return self._evaluate(module)

    def _evaluate(self, module) -> list[Result]:
        conditional = bool(getattr(module, "conditional", False))
        z, labels = self.plan(module.latent_dim, module.num_classes if conditional else 0)
        mine = torch.arange(self.n_samples)[self.rank::self.world]
        self._ssim_left = -(-self.ssim_samples // self.world)
        self._pairs_left = -(-self.ssim_pairs // self.world)
        for chunk in mine.split(self.batch_size):
            fake = module.sample(len(chunk), labels=labels[chunk] if conditional else None, z=z[chunk])
            self.update(fake.float().clamp(-1, 1), labels[chunk])
        data = self.store.compute()  # synchronised across processes
        self.store.reset()
        judge = conditional and module.num_classes == self.num_classes
        return self.results(data, judge)

    # ------------------------------------------------------------------ numbers
    def _ci(self, statistic, n: int, seed_offset: int = 0) -> dict[str, tuple[float, float]]:
        return bootstrap_cis(statistic, n, self.bootstrap, self.confidence, self.seed + seed_offset)

    def results(self, data: dict[str, Tensor], conditional: bool) -> list[Result]:
        n, n_real = len(data["label"]), len(self.ref_labels)
        out = [Result("metrics/n_fake", n), Result("metrics/n_real", n_real)]
        if self.domain_on:
            out += self._frechet_kid(data["domain_feat"], self.fd_ref, self.real_feats["domain"], "fd_domain",
                                     "kid_domain", n_real)
            for name, (value, n_hold) in self.baselines.items():
                if name == "fd_domain_real":
                    out.append(Result(f"metrics/{name}", value, n_real=n_hold))  # held-out reals vs reference
        if self.prdc_on:
            fake = data["domain_feat" if self.settings["prdc_space"] == "domain" else "incep_pool"]
            state = self.prdc.prepare(fake)
            values = self.prdc.compute(state)
            by_fake = self._ci(lambda idx: self.prdc.compute(state, fake_idx=idx), n, 1)
            by_real = self._ci(lambda idx: self.prdc.compute(state, real_idx=idx), len(self.prdc.real), 5)
            cis = {"precision": by_fake, "density": by_fake, "recall": by_real, "coverage": by_real}
            out += [Result(f"metrics/{k}", values[k], n, n_real, cis[k].get(k)) for k in PRDC_NAMES]
        if self.ssim_on:
            near = data["nearest"]
            out.append(Result("ssim/nearest_real", float(near.mean()), len(near), len(self.ssim_ref),
                              mean_ci(near, self.bootstrap, self.confidence, self.seed + 2)))
            for name, values in (("ssim/diversity", data["pair_ssim"]), ("ssim/ms_diversity", data["pair_ms"])):
                real, n_pairs = self.ssim_real[f"{name}_real"]
                out.append(Result(name, float(values.mean()), n_fake=len(values)))
                out.append(Result(f"{name}_real", float(real.mean()), n_real=n_pairs))
        if conditional and self.domain_on:
            out += self._conditional(data, n_real)
        if self.inception_on:
            out += self._frechet_kid(data["incep_pool"], self.fid_ref, self.real_feats["inception"], "fid", "kid",
                                     n_real)
            score, std = inception_score(data["incep_logits"], seed=self.seed)
            out += [Result("metrics/is", score, n), Result("metrics/is_std", std, n)]
        return out

    def _frechet_kid(self, fake: Tensor, ref: FrechetReference, real: Tensor, fd_name: str, kid_name: str,
                     n_real: int) -> list[Result]:
        fake = fake.double()
        projected = ref.project(fake)
        fd = ref.distance_projected(fake, projected)
        ci = self._ci(lambda idx: {"fd": ref.distance_projected(fake[idx], projected[idx])}, len(fake), 3).get("fd")
        kid, kid_std, m = kernel_distance(real, fake, self.kid_subset_size, self.kid_subsets, self.seed)
        self.settings[f"{kid_name}_subset_size"] = m
        out = [Result(f"metrics/{fd_name}", fd, len(fake), n_real, ci),
               Result(f"metrics/{kid_name}", kid, len(fake), n_real)]
        if kid_std == kid_std:  # NaN when one subset covered both sets
            out.append(Result(f"metrics/{kid_name}_std", kid_std, len(fake), n_real))
        return out

    def _conditional(self, data: dict[str, Tensor], n_real: int) -> list[Result]:
        pred, label, k = data["domain_pred"], data["label"], self.num_classes
        acc = cond.balanced_accuracy(pred, label, k)
        ci = self._ci(lambda idx: {"acc": cond.balanced_accuracy(pred[idx], label[idx], k)}, len(label), 4)
        out = [Result("metrics/cond_acc", acc, len(label), None, ci.get("acc"))]
        if "cond_acc_real" in self.baselines:
            value, n_hold = self.baselines["cond_acc_real"]
            out.append(Result("metrics/cond_acc_real", value, None, n_hold))
        for c, (a, n_c) in cond.per_class_accuracy(pred, label, k).items():
            out.append(Result(f"metrics/n_fake/{_key(self.class_names[c])}", n_c))
            out.append(Result(f"metrics/cond_acc/{_key(self.class_names[c])}", a, n_c))
        kids = cond.per_class_kid(self.real_feats["domain"], self.ref_labels, data["domain_feat"], label, k,
                                  self.kid_subset_size, self.kid_subsets, self.seed)
        for c, v in kids.items():
            out.append(Result(f"metrics/kid_domain/{_key(self.class_names[c])}", v["kid"], v["n_fake"], v["n_real"]))
        return out
