"""brainsim: offline, Alzheimer-like axial brain-MRI slices rendered from the MNI ICBM152 template.

Each image is one axial T1 slice from the band around the lateral ventricles, skull-stripped on
black like the Kaggle "Alzheimer's Dataset (4 class of Images)". The class sets a continuous
severity (overlapping between neighbouring classes) that enlarges the ventricles and thins the
cortex; every image also gets its own slice position, small affine and elastic deformation, bias
field, contrast change and Rician noise. All images come from one average brain: fine as a default
and for tests, not as a benchmark of realism. The template data (see ``assets/NOTICE_MNI152.txt``)
is derived once by :mod:`ganlab.data.brainsim_derive`; this module needs only numpy, scipy, pillow.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from ganlab.atomic import publish_dir
from ganlab.data.folder import ImageFolderDataModule
from ganlab.errors import GanlabError

CLASS_NAMES = ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented")
VERSION = 1  # bump when the rendering changes: it is part of the cache key
_ASSET = Path(__file__).with_name("assets") / "mni152_axial.npz"
_FOV_MM = 205.0  # side of the square field of view; the brain is ~150 x 180 mm
_SEVERITY_MEAN = (0.0, 1 / 3, 2 / 3, 1.0)
_SEVERITY_SD = 0.15  # neighbouring classes overlap: learnable but not trivial
_META = "brainsim.json"


_CHANNELS = ("t1", "gm", "wm", "mask", "dvent", "dsulc")
_PAD = 2  # voxels of padding so that out-of-range samples read the fill value


@functools.lru_cache(maxsize=4)
def _template(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(stack, center): the maps as float32 (z, row, col, channel), low-pass filtered for the
    output pixel size and padded; center is the brain's (row, col) in the padded frame."""
    with np.load(_ASSET) as d:
        maps = {k: d[k].astype(np.float32) / 255.0 for k in ("t1", "gm", "wm")}
        maps["mask"] = d["mask"].astype(np.float32)
        for k in ("dvent", "dsulc"):
            maps[k] = d[k].astype(np.float32) / float(d["dist_scale"])
    sigma = max(0.0, (_FOV_MM / image_size - 1.0) / 2.0)  # anti-aliasing, in 1 mm voxels
    fill = {"dvent": 99.0}
    stack = np.stack([np.pad(ndi.gaussian_filter(maps[k], (0, sigma, sigma)) if sigma else maps[k],
                             ((0, 0), (_PAD, _PAD), (_PAD, _PAD)), constant_values=fill.get(k, 0.0))
                      for k in _CHANNELS], axis=-1)
    center = np.asarray(ndi.center_of_mass(maps["mask"].sum(axis=0)), dtype=np.float32) + _PAD
    return stack, center


def _sample(stack: np.ndarray, z: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Trilinear lookup at one (fractional) slice: (H, W) coordinates -> (H, W, channel)."""
    z0 = min(int(z), stack.shape[0] - 2)
    plane = stack[z0] + np.float32(z - z0) * (stack[z0 + 1] - stack[z0])
    rows = np.clip(rows, 0, plane.shape[0] - 1.001)
    cols = np.clip(cols, 0, plane.shape[1] - 1.001)
    r0, c0 = rows.astype(np.intp), cols.astype(np.intp)
    fr = (rows - r0).astype(np.float32)[..., None]
    fc = (cols - c0).astype(np.float32)[..., None]
    top = plane[r0, c0] * (1 - fc) + plane[r0, c0 + 1] * fc
    bottom = plane[r0 + 1, c0] * (1 - fc) + plane[r0 + 1, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


@functools.lru_cache(maxsize=16)
def _basis(size: int, knots: int) -> np.ndarray:
    """(size, knots) Gaussian radial basis over [0, 1], rows normalised to unit norm."""
    x = (np.arange(size) + 0.5) / size
    centers = np.linspace(0, 1, knots)
    b = np.exp(-0.5 * ((x[:, None] - centers[None, :]) * (knots - 1)) ** 2)
    return (b / np.linalg.norm(b, axis=1, keepdims=True)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, count: int, size: int, knots: int) -> np.ndarray:
    """``count`` random smooth (size, size) fields with about unit standard deviation."""
    b = _basis(size, knots)
    return b @ rng.standard_normal((count, knots, knots)).astype(np.float32) @ b.T


def make_slice(rng: np.random.Generator, severity_class: int, image_size: int = 64) -> np.ndarray:
    """Render one (image_size, image_size) uint8 slice of class ``severity_class`` (0..3)."""
    if not 0 <= severity_class < len(CLASS_NAMES):
        raise ValueError(f"severity_class must be in 0..{len(CLASS_NAMES) - 1}, got {severity_class}")
    if not 32 <= image_size <= 256:
        raise ValueError(f"image_size must be in 32..256, got {image_size}")
    stack, center = _template(image_size)
    n = image_size
    sev = float(np.clip(rng.normal(_SEVERITY_MEAN[severity_class], _SEVERITY_SD), -0.2, 1.3))

    # geometry: output pixel -> template position (mm) via inverse affine + elastic displacement
    angle = np.deg2rad(np.clip(rng.normal(0.0, 5.0), -12, 12))
    scale = np.exp(rng.normal(0.0, 0.05, size=2)) * (1.0 - 0.04 * sev)  # atrophy shrinks the brain
    shift = rng.normal(0.0, 4.0, size=2)
    ax = ((np.arange(n, dtype=np.float32) + 0.5) / n - 0.5) * _FOV_MM
    yy, xx = np.meshgrid(ax - shift[0], ax - shift[1], indexing="ij")
    c, s = float(np.cos(angle)), float(np.sin(angle))
    elastic = _smooth_field(rng, 2, n, 5) * 1.5
    rows = (c * yy - s * xx) / scale[0] + elastic[0] + center[0]
    cols = (s * yy + c * xx) / scale[1] + elastic[1] + center[1]
    z = rng.uniform(0, stack.shape[0] - 1)
    t1, gm, wm, mask, dvent, dsulc = np.moveaxis(_sample(stack, z, rows, cols), -1, 0)

    # atrophy: tissue within r mm of the ventricles / of the other CSF becomes CSF
    soft = max(1.0, _FOV_MM / n)
    r_vent = max(0.0, 0.3 + 4.0 * sev + rng.normal(0.0, 0.4))
    r_sulc = max(0.0, 0.3 + 1.6 * sev + rng.normal(0.0, 0.2))
    extra = np.maximum(np.clip((r_vent - dvent) / soft + 0.5, 0, 1),
                       np.clip((r_sulc - dsulc) / soft + 0.5, 0, 1))
    csf = np.maximum(np.clip(mask - gm - wm, 0, 1), extra * mask)

    # intensity: template T1 with per-image grey/white contrast, CSF darkening, gamma, bias field
    img = t1 + rng.uniform(-0.04, 0.08) * (wm - gm)
    csf_level = rng.uniform(0.12, 0.26)
    img = img * (1 - csf) + csf_level * csf
    img = np.clip(img, 0, None) ** rng.uniform(0.8, 1.3)
    img = img * np.exp(0.12 * _smooth_field(rng, 1, n, 3)[0])
    sigma = rng.uniform(0.005, 0.025)
    noise = rng.standard_normal((2, n, n)) * sigma
    img = np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)  # Rician magnitude noise
    img = img * np.clip(mask * 1.5, 0, 1)  # skull-stripped: black outside the brain
    inside = img[mask > 0.5]
    ref = np.percentile(inside, 99) if inside.size else 1.0
    img = img / max(ref, 1e-6) * rng.uniform(0.85, 1.0)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _params(image_size=64, per_class=500, imbalance=None, test_fraction=0.2, seed=0, channels=1):
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    imbalance = dict(imbalance or {})
    unknown = set(imbalance) - set(CLASS_NAMES)
    if unknown:
        raise ValueError(f"unknown classes in imbalance: {sorted(unknown)}; expected {CLASS_NAMES}")
    return {"generator": "ganlab.brainsim", "version": VERSION, "image_size": int(image_size),
            "per_class": int(per_class), "imbalance": {k: float(imbalance[k]) for k in sorted(imbalance)},
            "test_fraction": float(test_fraction), "seed": int(seed), "channels": int(channels)}


def cache_dir_for(base_dir, **params) -> Path:
    """``base_dir/brainsim-<hash>``: a directory named by the full parameter set (defaults filled in)."""
    blob = json.dumps(_params(**params), sort_keys=True).encode()
    return Path(base_dir) / f"brainsim-{hashlib.sha256(blob).hexdigest()[:12]}"


def _counts(p: dict) -> dict[str, tuple[int, int]]:
    """Per class: (train, test) image counts."""
    out = {}
    for name in CLASS_NAMES:
        n = max(1, round(p["per_class"] * p["imbalance"].get(name, 1.0)))
        n_test = round(n * p["test_fraction"])
        if p["test_fraction"] > 0 and n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        out[name] = (n - n_test, n_test)
    return out


def _matches(root: Path, p: dict) -> bool:
    """Whether root holds a complete render made with parameters p."""
    try:
        meta = json.loads((root / _META).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and {k: meta.get(k) for k in p} == p


def render_brainsim(root, *, image_size=64, per_class=500, imbalance=None, test_fraction=0.2,
                    seed=0, channels=1, overwrite=False) -> Path:
    """Write ``root/{train,test}/<ClassName>/<index>.png`` (Kaggle Alzheimer layout) and return root.

    Image ``i`` of class ``k`` is drawn from ``np.random.default_rng([seed, k, i])``; the last
    ``test_fraction`` of each class's indices go to ``test``. ``imbalance`` maps class names to a
    fraction of ``per_class``. A root whose ``brainsim.json`` matches the request is returned as is
    (cache); any other non-empty root raises ValueError unless ``overwrite``.
    """
    p = _params(image_size, per_class, imbalance, test_fraction, seed, channels)
    root = Path(root)
    if _matches(root, p):
        return root
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ValueError(f"{root} exists and is not a brainsim render with these parameters; "
                         "pass overwrite=True or choose another directory")
    counts = _counts(p)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for k, name in enumerate(CLASS_NAMES):
            n_train, n_test = counts[name]
            for split in ("train", "test"):
                (tmp / split / name).mkdir(parents=True)
            for i in range(n_train + n_test):
                img = make_slice(np.random.default_rng([p["seed"], k, i]), k, p["image_size"])
                pil = Image.fromarray(img, "L")
                if p["channels"] == 3:
                    pil = pil.convert("RGB")
                split = "train" if i < n_train else "test"
                pil.save(tmp / split / name / f"{i:05d}.png", compress_level=1)
        meta = dict(p, counts={name: {"train": a, "test": b} for name, (a, b) in counts.items()})
        (tmp / _META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if _matches(root, p):  # another process finished the same render meanwhile
            shutil.rmtree(tmp)
            return root
        publish_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


class BrainSimDataModule(ImageFolderDataModule):
    """The embedded dataset, rendered once into ``cache_dir/brainsim-<hash>/`` and then read like any
    real dataset in the Kaggle Alzheimer layout."""

    def __init__(self, cache_dir: str = "data/brainsim", *, image_size: int = 64, channels: int = 1,
                 per_class: int = 500, imbalance: Mapping[str, float] | None = None,
                 test_fraction: float = 0.2, render_seed: int = 0, **loader_kwargs):
        self.render_params = dict(image_size=image_size, per_class=per_class, imbalance=dict(imbalance or {}),
                                  test_fraction=test_fraction, seed=render_seed, channels=channels)
        try:
            root = cache_dir_for(cache_dir, **self.render_params)
        except ValueError as exc:
            raise GanlabError(f"data: {exc}") from exc
        loader_kwargs.setdefault("class_names", CLASS_NAMES)
        super().__init__(root=str(root), image_size=image_size, channels=channels, train_split="train",
                         test_split="test", **loader_kwargs)

    def prepare_data(self) -> None:
        render_brainsim(self.root, **self.render_params)
