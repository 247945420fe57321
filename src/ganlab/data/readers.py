"""Reading images into uint8 arrays (C, H, W): files on disk, or rows of a parquet file.

A record is named by a string key: a file path, or `<file>.parquet#<row>` for a row of a parquet
file whose image column holds encoded bytes (or a `{"bytes": ..., "path": ...}` struct, as the
Hugging Face mirrors ship it).
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ganlab.errors import GanlabError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
IGNORED_NAMES = {"thumbs.db", "desktop.ini"}  # OS litter, never an image
RESIZE_POLICIES = ("pad", "crop", "stretch")
_PARQUET_SEP = ".parquet#"


def list_files(folder: Path) -> list[Path]:
    """Every file a class folder holds (sorted), except hidden files and OS litter: a stray non-image
    file is reported as a bad file rather than silently ignored."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.lower() not in IGNORED_NAMES)


def parquet_key(path: Path | str, row: int) -> str:
    return f"{path}#{row}"


def source_file(key: str) -> str:
    """The file on disk behind a record key."""
    return key.rsplit("#", 1)[0] if _PARQUET_SEP in key else key


def parquet_labels(path: Path, image_column: str, label_column: str | None) -> list:
    """The label column of a parquet file (all None when label_column is None), after checking
    that the image column exists and holds bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        raise GanlabError(f"cannot read parquet file {path}: {exc.__class__.__name__}: {one_line(exc)}") from exc
    for col in (image_column, label_column):
        if col is not None and col not in schema.names:
            raise GanlabError(f"{path} has no column {col!r} (columns: {schema.names}); set data.image_column/"
                              f"data.label_column")
    kind = schema.field(image_column).type
    if pa.types.is_struct(kind):
        ok = kind.get_field_index("bytes") >= 0
    else:
        ok = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    if not ok:
        raise GanlabError(f"{path}: column {image_column!r} is {kind}, expected encoded image bytes "
                          f"or a struct with a 'bytes' field")
    if label_column is None:
        return [None] * pq.ParquetFile(path).metadata.num_rows
    return pq.read_table(path, columns=[label_column]).column(0).to_pylist()


class ParquetImages:
    """The image bytes of the parquet files behind some keys, read once per decode pass."""

    def __init__(self, keys: list[str], image_column: str):
        import pyarrow.parquet as pq

        self.columns: dict[str, list] = {}
        for path in {source_file(k) for k in keys if _PARQUET_SEP in k}:
            self.columns[path] = pq.read_table(path, columns=[image_column]).column(0).to_pylist()

    def get(self, key: str) -> bytes | None:
        path, row = key.rsplit("#", 1)
        value = self.columns[path][int(row)]
        return value.get("bytes") if isinstance(value, dict) else value


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "its bytes", text)  # a parquet cell: the key names it


def open_image(key: str, parquet: ParquetImages | None = None) -> Image.Image:
    if _PARQUET_SEP in key:
        data = parquet.get(key) if parquet else None
        if not data:
            raise GanlabError(f"cannot read image {key}: the image cell is empty")
        return Image.open(io.BytesIO(data))
    return Image.open(key)


def to_array(im: Image.Image, image_size: int, channels: int, resize: str = "pad") -> np.ndarray:
    """One opened image -> uint8 (C, image_size, image_size), aspect kept per `resize`."""
    mode = "L" if channels == 1 else "RGB"
    if im.format == "JPEG":
        im.draft(mode, (image_size, image_size))  # let libjpeg downscale by 2/4/8 while decoding
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float scans: stretch min..max to 0..255 (a plain convert would clip at 255)
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        im = Image.fromarray(np.round(a).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "P") or "transparency" in im.info:
        # transparent pixels are background: composite onto black (a plain convert shows their hidden colour)
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im)
    im = im.convert(mode)
    size = (image_size, image_size)
    if resize == "pad":
        im = ImageOps.pad(im, size, method=Image.BICUBIC, color=0)
    elif resize == "crop":
        im = ImageOps.fit(im, size, method=Image.BICUBIC)
    elif resize == "stretch":
        im = im.resize(size, Image.BICUBIC)
    else:
        raise GanlabError(f"data.resize={resize!r}: choose one of {', '.join(RESIZE_POLICIES)}")
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def read_image(key: str, image_size: int, channels: int, resize: str = "pad",
               parquet: ParquetImages | None = None) -> np.ndarray:
    """Decode one record; any failure becomes a GanlabError naming it."""
    if _PARQUET_SEP not in key and Path(key).suffix.lower() not in IMAGE_EXTENSIONS:
        raise GanlabError(f"{key} is not an image file (extensions: {' '.join(IMAGE_EXTENSIONS)})")
    try:
        with open_image(key, parquet) as im:
            return to_array(im, image_size, channels, resize)
    except GanlabError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise GanlabError(f"cannot read image {key}: {exc.__class__.__name__}: {one_line(exc)}") from exc
