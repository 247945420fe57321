"""Each class's conditional-BatchNorm group spectral norms in a trained generator: what gSR
(model.gsr_weight, ganlab/models/gsr.py) regularises, and what grows for a long-tailed class without it.

    python experiments/quality/cbn_norms.py <run dir or last.ckpt> [...]

Prints, for the sampling (EMA) generator of each run, one line per class: its training images, then per
conditional BatchNorm (input side first) the largest singular value of its grouped scale offset (gamma - 1)
and shift (beta).
"""
from __future__ import annotations

import sys
from pathlib import Path


def class_norms(module) -> list[list[tuple[float, float]]]:
    """[class][layer] -> (scale offset's, shift's largest singular value)."""
    from ganlab.models.gsr import cbn_layers, group_spectral_norms

    layers = [group_spectral_norms(layer) for layer in cbn_layers(module.sampling_generator())]
    if not layers:
        raise SystemExit("error: this generator has no conditional BatchNorm (model=cdcgan with "
                         "model.generator.conditioning=cbn)")
    return [[(float(gamma[c]), float(beta[c])) for gamma, beta in layers] for c in range(module.num_classes)]


def main() -> None:
    import torch

    from ganlab.checkpoint import load_gan

    for arg in sys.argv[1:]:
        path = Path(arg)
        ckpt = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
        module, data = load_gan(ckpt)
        print(f"{ckpt}  (gsr_weight {module.hparams.get('gsr_weight', 0.0)}; per layer: scale offset / shift)")
        counts = data.get("class_counts") or {}
        with torch.no_grad():
            rows = class_norms(module)
        for name, row in zip(data["class_names"], rows):
            cells = "  ".join(f"{g:.2f}/{b:.2f}" for g, b in row)
            print(f"  {name:18s} {counts.get(name, '?'):>5} images  {cells}")


if __name__ == "__main__":
    main()
