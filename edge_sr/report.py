"""Markdown reports assembled from sections: each producer replaces only its own section.

``docs/BENCHMARKS.md`` and ``docs/MODEL_ZOO.md`` are written by several commands (``edge-sr bench``,
``edge-sr bench reparam``, ...). Each owns the text between ``<!-- name:begin -->`` and
``<!-- name:end -->``; a missing section is appended.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_sr.io_utils import atomic_path


def update_section(
    path: str | os.PathLike[str], name: str, markdown: str, *, title: str | None = None
) -> Path:
    """Replace (or append) section ``name`` of the markdown file at ``path``, atomically."""
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else (f"# {title}\n" if title else "")
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
