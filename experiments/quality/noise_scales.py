"""How much a generator's noise inputs (model.generator.noise_inputs=true) actually do.

    python experiments/quality/noise_scales.py <run dir or last.ckpt> [...]

Prints, for the EMA generator, each noise input's learned per-channel scale (mean |scale| and max) and the
images' change when only the noise is redrawn: the same latents and labels twice, the standard deviation
of the difference in uint8 grey levels inside the brain (pixels above 8). For scale: brainsim's Rician noise
has sigma 1.3-6.4 grey levels (0.005-0.025 of full scale).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch


def noise_effect(module, n: int = 64, seed: int = 0) -> dict:
    from ganlab.models.dcgan import NoiseInput

    g = module.sampling_generator().eval()
    scales = {name: (float(m.weight.detach().abs().mean()), float(m.weight.detach().abs().max()))
              for name, m in g.named_modules() if isinstance(m, NoiseInput)}
    z = torch.randn(n, module.latent_dim, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % module.num_classes if module.conditional else None
    # grey levels unrounded: ganlab.pixels.to_uint8 would round sub-level changes away
    grey = lambda x: (x.float().clamp(-1, 1) + 1) * 127.5  # noqa: E731
    with torch.no_grad():
        a, b = grey(g(z, labels)), grey(g(z, labels))
    inside = a > 8
    return {"scales": scales, "redraw_sd_grey_levels": float((a - b)[inside].std()) if inside.any() else 0.0}


def main() -> None:
    from ganlab.checkpoint import load_gan

    for arg in sys.argv[1:]:
        path = Path(arg)
        ckpt = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
        module, _ = load_gan(ckpt)
        out = noise_effect(module)
        print(f"{ckpt}: redrawing the noise changes the images by sd {out['redraw_sd_grey_levels']:.2f} grey levels")
        for name, (mean, top) in out["scales"].items() or {"(no noise inputs)": (0.0, 0.0)}.items():
            print(f"  {name}: mean |scale| {mean:.4f}, max {top:.4f}")


if __name__ == "__main__":
    main()
