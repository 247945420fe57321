"""Derive the embedded "brainsim" asset from nilearn's MNI ICBM152 2009a template (one-off).

The runtime (:mod:`ganlab.data.brainsim`) needs neither nilearn nor the network; only this
script does. nilearn ships the 1 mm T1, grey-matter, white-matter and brain-mask volumes inside
its package, so nothing is downloaded. Re-create the asset with::

    python3 -m venv /tmp/derive && /tmp/derive/bin/pip install nilearn    # or: pip install -e ".[derive]"
    PYTHONPATH=src /tmp/derive/bin/python -m ganlab.data.brainsim_derive

It writes ``src/ganlab/data/assets/mni152_axial.npz`` (next to this file): a band of axial
slices around the lateral ventricles, cropped to the brain, 1 mm in-plane and 2 mm apart,
arrays indexed ``[z, row, col]`` with row 0 anterior. All maps are uint8:

- ``t1``, ``gm``, ``wm``: T1 intensity and tissue probabilities, scaled to 0..255;
- ``mask``: brain mask (0/1);
- ``dvent``: 3-D distance to the lateral ventricles, ``dsulc``: 3-D distance to the other CSF
  (sulci, cisterns, brain surface), both in 1/16 mm and capped at 255 (≈16 mm). They let the
  runtime enlarge the ventricles and thin the cortex by thresholding instead of morphology.

CSF has no map in nilearn; it is taken as ``mask - gm - wm``. The ventricles are the largest
connected component of CSF > 0.5 that does not touch the brain surface.
The template's licence notice is in ``assets/NOTICE_MNI152.txt`` and must travel with the asset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ASSET = Path(__file__).with_name("assets") / "mni152_axial.npz"
Z_BAND = (74, 106, 2)  # voxel z start/stop/step, MNI z = +2 .. +32 mm: third ventricle to top of the bodies
DIST_SCALE = 16.0  # distance units per mm in the uint8 distance maps


def _load() -> dict[str, np.ndarray]:
    from nilearn import datasets  # only the derivation needs nilearn

    vols = {
        "t1": datasets.load_mni152_template(resolution=1),
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
        "mask": datasets.load_mni152_brain_mask(resolution=1),
    }
    affine = vols["t1"].affine
    assert np.allclose(np.abs(np.diag(affine)[:3]), 1.0), "expected the 1 mm template"
    return {k: np.asarray(v.get_fdata(), dtype=np.float32) for k, v in vols.items()}


def _ventricles(csf: np.ndarray, mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(csf > 0.5)
    filled = ndi.binary_fill_holes(mask)  # the mask has a few interior holes next to the ventricles
    surface = filled & ~ndi.binary_erosion(filled)
    touching = set(np.unique(lab[surface])) - {0}
    sizes = ndi.sum(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    inner = [(s, i + 1) for i, s in enumerate(sizes) if i + 1 not in touching]
    return lab == max(inner)[1]


def derive() -> Path:
    v = _load()
    mask = ndi.binary_fill_holes(v["mask"] > 0.5)
    csf = np.clip(v["mask"] - v["gm"] - v["wm"], 0.0, 1.0)
    vent = _ventricles(csf, mask)
    other_csf = ((csf > 0.35) & ~ndi.binary_dilation(vent, iterations=2)) | ~mask
    dvent = ndi.distance_transform_edt(~vent)
    dsulc = ndi.distance_transform_edt(~other_csf)

    z0, z1, dz = Z_BAND
    xs = np.where(mask[:, :, z0:z1].any(axis=(1, 2)))[0]
    ys = np.where(mask[:, :, z0:z1].any(axis=(0, 2)))[0]
    box = (slice(xs[0] - 4, xs[-1] + 5), slice(ys[0] - 4, ys[-1] + 5), slice(z0, z1, dz))

    def axial(a: np.ndarray) -> np.ndarray:
        # (x, y, z) -> (z, y, x) with y flipped so that row 0 is anterior
        return np.ascontiguousarray(np.transpose(a[box], (2, 1, 0))[:, ::-1, :])

    def u8(a: np.ndarray, scale: float) -> np.ndarray:
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)

    out = {
        "t1": u8(axial(v["t1"]) / max(v["t1"].max(), 1e-6), 255),
        "gm": u8(axial(v["gm"]), 255),
        "wm": u8(axial(v["wm"]), 255),
        "mask": axial(mask).astype(np.uint8),
        "dvent": u8(axial(dvent), DIST_SCALE),
        "dsulc": u8(axial(dsulc), DIST_SCALE),
        "dist_scale": np.float32(DIST_SCALE),
        "mni_z": np.arange(z0, z1, dz, dtype=np.int16) - 72,  # voxel 72 is MNI z = 0
        "source": np.array("nilearn MNI ICBM152 2009a (sym) 1 mm: T1, GM, WM, brain mask"),
    }
    ASSET.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(ASSET, **out)
    return ASSET


if __name__ == "__main__":
    path = derive()
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
