"""Inception FID / KID / IS from a local weights file, never the network: a randomly initialised
torch-fidelity InceptionV3 saved in the released file's format (a plain state_dict) stands in for
weights-inception-2015-12-05-6726825d.pth."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception

from conftest import TINY
from ganlab.errors import GanlabError
from ganlab.metrics.families.inception import InceptionMetrics
from ganlab.metrics.inception import (WEIGHTS_FILE, InceptionFeatures, InceptionSpace, resolve_weights,
                                      standard_weights_path)
from ganlab.metrics.suite import MetricSuite


def _no_network(*args, **kwargs):
    raise AssertionError("the network was asked for Inception weights")


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_FILE
    cls = fidelity_inception.FeatureExtractorInceptionV3
    with mock.patch.object(fidelity_inception, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(cls, "load_state_dict", lambda self, state, *a, **k: None):
        net = cls("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(fidelity_inception, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster for these small batches
    yield
    torch.set_num_threads(threads)


def test_features_from_a_local_file(inception_weights):
    net = InceptionFeatures(inception_weights, antialias=False)
    pool, logits = net(torch.rand(2, 1, 32, 32) * 2 - 1)  # grayscale, [-1, 1]
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.isfinite(pool).all() and torch.isfinite(logits).all()
    same, _ = net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8).expand(1, 3, 32, 32))
    assert torch.isfinite(same).all()


def test_weights_resolution(inception_weights, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert standard_weights_path() == tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_FILE
    assert resolve_weights(str(inception_weights)) == inception_weights
    with caplog.at_level(logging.WARNING, logger="ganlab.metrics"):
        assert resolve_weights(None, "skip") is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "FID/KID/IS are skipped" in lines[0] and str(standard_weights_path()) in lines[0]
    with pytest.raises(GanlabError, match="metrics.spaces.inception.weights=.*missing.pth"):
        resolve_weights(str(tmp_path / "missing.pth"), "error")
    with pytest.raises(GanlabError, match="metrics.spaces.inception.on_missing"):
        resolve_weights(None, "download")
    standard_weights_path().parent.mkdir(parents=True)
    standard_weights_path().symlink_to(inception_weights)  # a file at the cache path also works
    assert resolve_weights(None, "error") == standard_weights_path()
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a state dict")
    with pytest.raises(GanlabError, match="not an InceptionV3 state_dict"):
        InceptionFeatures(broken)


class Replay:
    """Stands in for a GANModule: returns the given images."""

    latent_dim, num_classes, conditional = 4, 0, False

    def __init__(self, images):
        self.images = images

    def sample(self, n, labels=None, z=None):
        return self.images[:n].float() / 127.5 - 1


def test_fid_kid_is_through_the_suite(inception_weights):
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (4, 1, 32, 32), generator=g, dtype=torch.uint8)
    suite = MetricSuite({"inception": InceptionMetrics()}, {"inception": InceptionSpace(str(inception_weights))},
                        n_samples=4, batch_size=4, bootstrap=4)
    suite.prepare(real, torch.zeros(4, dtype=torch.long), ["all"])
    same = {r.name: r for r in suite.evaluate(Replay(real))}
    other = {r.name: r for r in suite.evaluate(Replay(255 - real))}
    for name in ("metrics/fid", "metrics/kid", "metrics/is"):
        assert math.isfinite(same[name].value) and math.isfinite(other[name].value), name
    assert same["metrics/fid"].value < 1e-6 * other["metrics/fid"].value
    # (KID's polynomial kernel is ~constant on a random network's tiny features: its value is checked
    # against torchmetrics in test_metrics.py)
    assert same["metrics/fid"].n_fake == 4 and suite.settings["kid_subset_size"] == 4  # capped at N
    assert suite.settings["inception"]["antialias"] is False


def test_missing_weights_stop_at_start_up_in_one_line(run_cli, cli_env, tmp_path):
    env = {**cli_env, "TORCH_HOME": str(tmp_path / "empty_torch_home")}
    result = run_cli("ganlab.train", *TINY, "logger=none", "metrics=inception", f"hydra.run.dir={tmp_path / 'run'}",
                     env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: metrics: Inception weights not found at ") and WEIGHTS_FILE in lines[-1]
    assert sum("Inception" in line for line in lines) == 1 and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_families_of_a_missing_space_are_left_out_after_one_line(tmp_path, monkeypatch, caplog):
    """on_missing=skip: the suite is built without the Inception families (PRDC in Inception space too)."""
    from ganlab.metrics.families.prdc import PrecisionRecall
    from ganlab.metrics.families.ssim import SSIMFamily

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with caplog.at_level(logging.WARNING, logger="ganlab.metrics"):
        suite = MetricSuite({"ssim": SSIMFamily(), "inception": InceptionMetrics(),
                             "prdc": PrecisionRecall(space="inception")})
    assert list(suite.families) == ["ssim"] and set(suite.skipped) == {"inception", "prdc"}
    assert len(caplog.records) == 1 and "FID/KID/IS are skipped" in caplog.records[0].getMessage()
