"""callbacks.ema_tracks: more averages of the same generator, to choose from after training
(experiments/quality/ema_length.py)."""
from __future__ import annotations

import copy
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO, TINY, assert_ok
from ganlab.callbacks.ema_tracks import EMATracks, gamma_of_sigma_rel
from test_models import fit, make_module, tiny_loader

sys.path[:0] = [str(REPO / "experiments" / "quality"), str(REPO / "experiments")]
from ema_length import TRACKS_KEY, track_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def feed(callback: EMATracks, values, batch: int = 4) -> torch.nn.Module:
    """Run `callback` over batches after which the 'generator' (one weight) holds each of `values` in turn."""
    net = torch.nn.Linear(1, 1, bias=False)
    module, trainer = SimpleNamespace(generator=net), SimpleNamespace(world_size=1)
    for v in values:
        net.weight.data.fill_(float(v))
        callback.on_train_batch_end(trainer, module, None, (torch.zeros(batch, 1), torch.zeros(batch)), 0)
    return net


def weight(callback: EMATracks, name: str) -> float:
    return callback.tracks[name].weight.item()


def test_a_half_life_track_is_the_models_ema_with_that_half_life(tmp_path):
    torch.manual_seed(0)
    module = make_module("cdcgan", g_cond="cbn", ema_decay=None, ema_kimg=0.02)  # 20 images: decay 0.87 at batch 4
    tracks = EMATracks(half_lives_kimg=[0.02], sigma_rels=[0.1])
    fit(module, tiny_loader(n=32, batch_size=4), tmp_path, callbacks=[tracks], max_epochs=2)
    model_ema = module.generator_ema.module.state_dict()
    track = tracks.tracks["0.02kimg"].state_dict()
    other = tracks.tracks["sigma0.1"].state_dict()
    floats = [k for k, v in model_ema.items() if v.is_floating_point()]
    assert all(torch.allclose(track[k], model_ema[k], atol=1e-6) for k in floats)
    assert any(not torch.allclose(other[k], model_ema[k], atol=1e-4) for k in floats)  # another averaging differs


def test_a_power_track_weights_step_t_as_t_to_the_gamma_and_a_half_life_track_decays_by_its_images():
    n = 2000
    tracks = EMATracks(half_lives_kimg=[0.1], sigma_rels=[0.05, 0.2])
    feed(tracks, range(1, n + 1))
    for sigma in (0.05, 0.2):  # the mean of t under weights t^gamma on 1..n: (gamma + 1) / (gamma + 2) n
        gamma = gamma_of_sigma_rel(sigma)
        assert weight(tracks, f"sigma{sigma:g}") == pytest.approx((gamma + 1) / (gamma + 2) * n, rel=0.01)
    assert weight(tracks, "sigma0.05") > weight(tracks, "sigma0.2")  # the narrower window sits nearer the end
    beta = 0.5 ** (4 / 100)  # batch 4, half-life 100 images: the average lags a ramp by beta / (1 - beta)
    assert weight(tracks, "0.1kimg") == pytest.approx(n - beta / (1 - beta), rel=1e-4)
    assert gamma_of_sigma_rel(0.1) == pytest.approx(6.94, abs=0.01)  # EDM2's table: sigma_rel 0.10 <-> gamma 6.94


def test_tracks_resume_where_they_stopped_and_refuse_other_tracks():
    whole = EMATracks(half_lives_kimg=[0.05], sigma_rels=[0.1])
    feed(whole, range(30))
    first = EMATracks(half_lives_kimg=[0.05], sigma_rels=[0.1])
    feed(first, range(12))
    resumed = EMATracks(half_lives_kimg=[0.05], sigma_rels=[0.1])
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    feed(resumed, range(12, 30))
    for name in ("0.05kimg", "sigma0.1"):
        assert weight(resumed, name) == pytest.approx(weight(whole, name), rel=1e-6)
    other = EMATracks(sigma_rels=[0.2])
    with pytest.raises(ValueError, match=r"no track \['sigma0.2'\]"):
        other.load_state_dict(first.state_dict())


def test_bad_track_settings_name_the_key():
    with pytest.raises(ValueError, match="half_lives_kimg=.*positive"):
        EMATracks(half_lives_kimg=[-1])
    with pytest.raises(ValueError, match="sigma_rels=.*0.288"):
        EMATracks(sigma_rels=[0.5])
    assert EMATracks().state_dict() == {}  # none configured: nothing kept, nothing saved


def test_a_run_keeps_its_tracks_and_ema_length_samples_each(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    assert_ok(run_cli("ganlab.train", "model=cdcgan", *TINY, "logger=none", "callbacks.ema_tracks.sigma_rels=[0.05]",
                      "callbacks.ema_tracks.half_lives_kimg=[0.01]", f"hydra.run.dir={run_dir}"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert sorted(ckpt["callbacks"][TRACKS_KEY]["tracks"]) == ["0.01kimg", "sigma0.05"]
    swapped = track_checkpoint(ckpt, "sigma0.05")
    track = ckpt["callbacks"][TRACKS_KEY]["tracks"]["sigma0.05"]
    assert all(torch.equal(swapped["state_dict"]["generator_ema.module." + k], v) for k, v in track.items())
    assert TRACKS_KEY not in swapped["callbacks"] and TRACKS_KEY in ckpt["callbacks"]  # the original is untouched
    with pytest.raises(KeyError, match="no EMA track 'sigma0.3'"):
        track_checkpoint(ckpt, "sigma0.3")
