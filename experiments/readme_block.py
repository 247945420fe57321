"""The experiments' README figures: the markdown between `<!-- NAME:start -->` and `<!-- NAME:end -->`
is replaced by what a full-size run measured; everything else in the README stays as written."""
from __future__ import annotations

from pathlib import Path


def check_block(readme: Path, name: str) -> None:
    """Refuse before a long run, not after it, when the README has no block NAME to write into."""
    text = readme.read_text()
    if f"<!-- {name}:start -->" not in text or f"<!-- {name}:end -->" not in text:
        raise SystemExit(f"error: {readme} has no <!-- {name}:start --> ... <!-- {name}:end --> block to write into")


def write_block(readme: Path, name: str, markdown: str) -> None:
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    start, end = text.index(start_mark) + len(start_mark), text.index(end_mark)
    readme.write_text(text[:start] + "\n" + markdown + "\n" + text[end:])
