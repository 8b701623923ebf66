"""Where a run over one bundle and one dataset starts: its work set, the loaded bundle, its folder
(``runs/<bundle name>/<subset>``) and the result cache inside it."""
from __future__ import annotations

from pathlib import Path
from typing import TextIO

import runtime
from readers.errors import DatasetError
from readers.workset import load_worksets
from runtime.errors import RuntimeInputError

CACHE_FILE = "cache.jsonl"


def default_out(bundle: str | Path, subset: str) -> Path:
    return Path("runs") / Path(bundle).expanduser().resolve().name / subset


def open_one_dataset(args, err: TextIO):
    """(work set, VLM, output folder) for a command over one dataset and one bundle (``args.dataset``,
    ``subset``, ``image_root``, ``limit``, ``bundle``, ``provider``, ``out``); None after printing
    the error when the dataset is unusable or holds several subsets, or the bundle does not load."""
    try:
        worksets = load_worksets([args.dataset], args.subset, args.image_root, args.limit, err)
    except DatasetError as e:
        print(f"error: {e}", file=err)
        return None
    if len(worksets) != 1:
        print(f"error: {args.dataset} holds several datasets ({', '.join(w.subset for w in worksets)}); "
              f"pick one with --subset", file=err)
        return None
    ws = worksets[0]
    if not ws.items:
        print(f"error: no usable items in {args.dataset}", file=err)
        return None
    try:
        vlm = runtime.load(args.bundle, providers=args.provider or ["cpu"])
    except RuntimeInputError as e:
        print(f"error: {type(e).__name__}: {e}", file=err)
        return None
    out_dir = args.out or default_out(args.bundle, ws.subset)
    out_dir.mkdir(parents=True, exist_ok=True)
    return ws, vlm, out_dir
