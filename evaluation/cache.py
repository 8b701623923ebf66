"""Per-example model results, cached in a JSONL file so that an interrupted run resumes.

One line per model call::

    {"key": "<bundle>|<item id>|<item digest>|<pass>|<max_new_tokens>",
     "bundle": ..., "item": ..., "digest": ..., "pass": ..., "max_new_tokens": ...,
     "text": ..., "token_ids": [...], "confidence": ..., "scale": ..., "influence": {...} | null,
     "seconds": ...[, "alignment": {...} | null]}

``alignment`` (evaluate's AdaptVis pass on items with boxes, bundles with attention
outputs): the share of image attention inside each box per layer, for the alpha = 1 and
the rescaled step, and the boxes' area fractions (:func:`evaluation.alignment.alignment`);
never the maps themselves.  Records written before it have no such key (see
:mod:`evaluation.runner` for what happens then).

The key names what was computed: the bundle (sha256 of its manifest, which holds the
sha256 of every graph and the tokenizer), the item (its id and a digest of its question
and image bytes, so a regenerated dataset with the same ids does not hit stale
results), the pass (``none``, ``alpha=0.5``, ``adaptvis=...``, ``blank``; see
:mod:`evaluation.runner`) and ``max_new_tokens``.  Lines are appended and flushed one
at a time; when a key appears twice the last line wins.  A line that does not parse (a
run killed in the middle of a write) is skipped on load.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Optional


def make_key(bundle: str, item_id: str, digest: str, pass_name: str, max_new_tokens: int) -> str:
    return f"{bundle}|{item_id}|{digest}|{pass_name}|{int(max_new_tokens)}"


class ResultCache:
    """A dict of cached records backed by an append-only JSONL file (``path=None``: memory only)."""

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        self._records: dict[str, dict] = {}
        self.skipped_lines = 0
        self._file = None
        if self.path is not None and self.path.is_file():
            self._load()

    def _load(self) -> None:
        with open(self.path, "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    self.skipped_lines += 1
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("key"), str):
                    self._records[rec["key"]] = rec
                else:
                    self.skipped_lines += 1

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> Optional[dict]:
        return self._records.get(key)

    def records(self) -> Iterator[dict]:
        return iter(self._records.values())

    def put(self, record: dict) -> None:
        """Store ``record`` (which carries its ``key``) and append it to the file, flushed."""
        key = record["key"]
        self._records[key] = record
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a+b")
            # A previous run killed mid-line leaves no newline at the end: start a fresh line.
            if self._file.tell() > 0:
                self._file.seek(-1, os.SEEK_END)
                if self._file.read(1) != b"\n":
                    self._file.write(b"\n")
        self._file.write((json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8"))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "ResultCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
