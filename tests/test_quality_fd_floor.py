"""experiments/quality/fd_floor.py: both sides of FD/floor measured again, the generated side over latent draws
in the ladder's fixed feature space, the real side on new renders with the training class mix."""
from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO

sys.path[:0] = [str(REPO / "experiments" / "quality")]
from fd_floor import draw_with_mix, equal_n_ratio, measure, table  # noqa: E402


def test_draws_keep_the_class_mix_and_never_repeat_an_image():
    pool = {k: torch.arange(400)[:, None] + 1000 * k for k in range(4)}  # each image is its own id
    mix = torch.tensor([360.0, 360.0, 360.0, 22.0])  # the ladder's training split
    for n, expected, seed in ((1024, [335, 335, 335, 20], 0), (306, [100, 100, 100, 6], 1)):
        draw = draw_with_mix(pool, mix, n, seed)
        assert torch.bincount((draw[:, 0] // 1000).long(), minlength=4).tolist() == expected
        assert len(set(draw[:, 0].tolist())) == len(draw)
    assert not torch.equal(draw_with_mix(pool, mix, 306, 1), draw_with_mix(pool, mix, 306, 2))
    with pytest.raises(SystemExit, match="too small"):
        draw_with_mix({k: v[:300] for k, v in pool.items()}, mix, 1024, seed=0)


@pytest.mark.slow
def test_measure_varies_only_the_latents_and_finds_the_small_sample_bias(cdcgan_ckpt, data_dir, monkeypatch,
                                                                          tmp_path):
    monkeypatch.setenv("GANLAB_DATA_DIR", str(data_dir))
    r = measure(cdcgan_ckpt.parent.parent, draws=2, render_seed=9000, per_class=300, pool_root=tmp_path / "pool",
                space_seeds=(0, 1))
    assert set(r["spaces"]) == {"0", "1"} and r["generated_1024"] == r["spaces"]["0"]["generated_1024"]
    assert r["spaces"]["1"]["generated_1024"]["values"] != r["generated_1024"]["values"]  # another classifier
    generated = r["generated_1024"]["values"]
    assert len(generated) == 2 and generated[0] != generated[1] and all(v > 0 for v in generated)
    small, big = r["real_new"][str(r["holdout_n"])], r["real_new"]["1024"]
    assert r["holdout_n"] < 1024 and small["mean"] > big["mean"] > 0  # FD's upward bias at small n
    markdown = table([r, {**r, "draws": 3}])  # the last record of a run is the one shown
    assert markdown.count("| " + cdcgan_ckpt.parent.parent.name + " |") == 1 and "over 3 draws" in markdown
    lo, hi = sorted(equal_n_ratio(v) for v in r["spaces"].values())
    assert f"[{lo:.1f}, {hi:.1f}] (2) |" in markdown  # the ratio at equal n over the two feature spaces
