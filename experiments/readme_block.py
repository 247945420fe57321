"""The experiments' README figures: the markdown between `<!-- NAME:start -->` and `<!-- NAME:end -->`
is replaced by what a full-size run measured; everything else in the README stays as written."""
from __future__ import annotations

from pathlib import Path


def write_block(readme: Path, name: str, markdown: str) -> None:
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    start, end = text.index(start_mark) + len(start_mark), text.index(end_mark)
    readme.write_text(text[:start] + "\n" + markdown + "\n" + text[end:])
