"""The decoded tensor store: every split's images as one uint8 tensor (N, C, H, W), decoded once and
cached as a `.pt` file keyed by a hash of (record list + file sizes/mtimes + image_size, channels,
resize), so later runs (and DDP workers) skip the JPEG decoding."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ganlab.atomic import atomic_torch_save
from ganlab.data.readers import ParquetImages, read_image, source_file
from ganlab.errors import GanlabError

log = logging.getLogger("ganlab.data")
STORE_VERSION = 2  # bump when decoding changes: it is part of the cache key

Listing = dict[str, list[tuple[str, int]]]  # split -> [(record key, label)]


def decode(keys: list[str], image_size: int, channels: int, resize: str, *, image_column: str = "image",
           skip_bad_files: bool = False) -> tuple[torch.Tensor, list[int], list[str]]:
    """(images of the readable records, their indices in `keys`, one message per bad record).
    A bad record raises GanlabError unless skip_bad_files."""
    parquet = ParquetImages(keys, image_column)
    out = np.zeros((len(keys), channels, image_size, image_size), dtype=np.uint8)

    def one(i: int) -> str | None:
        try:
            out[i] = read_image(keys[i], image_size, channels, resize, parquet)
        except GanlabError as exc:
            if not skip_bad_files:
                raise GanlabError(f"{exc} (set data.skip_bad_files=true to skip bad files)") from exc
            return str(exc)
        return None

    workers = min(4, os.cpu_count() or 1) if len(keys) > 64 else 1  # PIL decodes without the GIL
    with ThreadPoolExecutor(workers) as pool:
        errors = list(pool.map(one, range(len(keys))))
    kept = [i for i, e in enumerate(errors) if e is None]
    return torch.from_numpy(out if len(kept) == len(keys) else out[kept]), kept, [e for e in errors if e is not None]


def fingerprint(listing: Listing, **options) -> str:
    stats: dict[str, list[int]] = {}
    for records in listing.values():
        for key, _ in records:
            path = source_file(key)
            if path not in stats:
                try:
                    st = os.stat(path)
                    stats[path] = [st.st_size, st.st_mtime_ns]
                except OSError:
                    stats[path] = [-1, -1]
    blob = json.dumps({"version": STORE_VERSION, "options": options, "listing": listing, "stats": stats},
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _load(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a truncated or foreign file: decode again and overwrite it
        log.warning("ignoring unreadable cache %s (%s)", path, exc.__class__.__name__)
        return None


def _save(path: Path, store: dict) -> None:
    """Write atomically: a reader sees the old file, the new one, or none, never half of one."""
    try:
        atomic_torch_save(store, path)
    except OSError as exc:
        log.warning("could not write the data cache %s: %s", path, exc)


def build_store(listing: Listing, *, image_size: int, channels: int, resize: str, image_column: str = "image",
                skip_bad_files: bool = False, cache_file: Path | None = None) -> dict:
    """{split: {"images", "labels", "files"}, "bad": [messages]} for every split of the listing,
    from `cache_file` when it holds the same records decoded the same way."""
    store = _load(cache_file) if cache_file else None
    if store is None:
        keys = [k for records in listing.values() for k, _ in records]
        images, kept, bad = decode(keys, image_size, channels, resize, image_column=image_column,
                                   skip_bad_files=skip_bad_files)
        labels = [label for records in listing.values() for _, label in records]
        split_of = [split for split, records in listing.items() for _ in records]
        store = {"splits": {}, "bad": bad}
        start = 0
        for split in listing:  # records are grouped by split, so each split is a slice (a view, no copy)
            end = start + sum(1 for i in kept[start:] if split_of[i] == split)
            rows = kept[start:end]
            store["splits"][split] = {"images": images[start:end],
                                      "labels": torch.tensor([labels[i] for i in rows], dtype=torch.long),
                                      "files": [keys[i] for i in rows]}
            start = end
        if cache_file:
            _save(cache_file, store)
    elif store["bad"] and not skip_bad_files:
        raise GanlabError(f"{store['bad'][0]} (set data.skip_bad_files=true to skip bad files)")
    else:
        log.info("data: decoded images read from cache %s", cache_file)
    if store["bad"]:
        log.warning("skipped %d bad file(s), e.g. %s", len(store["bad"]), store["bad"][0])
    return store
