"""Markdown pages assembled from named sections: each benchmark replaces only its own section.

``docs/BENCHMARKS.md`` and ``docs/MODEL_ZOO.md`` are written by several ``edge-sr bench`` kinds. Each owns
the text between ``<!-- name:begin -->`` and ``<!-- name:end -->``; a missing section is appended.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_sr.io_utils import atomic_path


def update_section(
    path: str | os.PathLike[str], name: str, markdown: str, *, title: str | None = None
) -> Path:
    """Replace (or append) section ``name`` of the markdown file at ``path``, atomically.

    Args:
        path: the markdown file (created with ``# title`` when missing).
        name: the section's marker name.
        markdown: the section's new content.
        title: the page title for a new file.

    Returns:
        ``path``.
    """
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
