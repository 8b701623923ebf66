"""Resolve what the user named (alias, hub id, local folder) to a local checkpoint folder."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceNotFoundError, UnsupportedModelError

ALIASES = {"llava": "llava-hf/llava-1.5-7b-hf", "qwen2.5-vl": "Qwen/Qwen2.5-VL-3B-Instruct",
           "qwen3-vl": "Qwen/Qwen3-VL-2B-Instruct"}
# the family (config.json's model_type) each alias names, known before anything is downloaded
ALIAS_MODEL_TYPES = {"llava": "llava", "qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl"}
SUPPORTED_MODEL_TYPES = ("llava",)          # LlavaForConditionalGeneration: CLIP + projector + Llama
SUPPORTED_TEXT_TYPES = ("llama",)
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]


@dataclass(frozen=True)
class Source:
    name: str               # what the user asked for, after alias expansion
    folder: Path            # local folder holding config.json and the weights
    revision: str | None    # hub commit hash, None for a local folder


def resolve(model: str, revision: str | None = None) -> Source:
    """A LLaVA checkpoint's folder (``UnsupportedModelError`` for any other)."""
    source = locate(model, revision)
    check_supported(source.folder)
    return source


def locate(model: str, revision: str | None = None) -> Source:
    """The checkpoint's local folder, whatever its family."""
    name = ALIASES.get(model, model)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise SourceNotFoundError(f"{path} has no config.json: expected a Hugging Face checkpoint folder")
        source = Source(str(path.resolve()), path.resolve(), None)
    elif name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise SourceNotFoundError(
            f"{name!r} is neither an existing folder nor a hub id of the form 'owner/name'")
    else:
        source = _download(name, revision)
    return source


def _download(repo_id: str, revision: str | None) -> Source:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    hint = "download it elsewhere and pass the local folder (just export /path/to/checkpoint)"
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_FILES)
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise SourceNotFoundError(f"model {repo_id!r} was not found on the Hugging Face Hub (or is gated): "
                                  f"{type(e).__name__}; {hint}") from None
    except RevisionNotFoundError:
        raise SourceNotFoundError(f"revision {revision!r} of {repo_id!r} does not exist") from None
    except (LocalEntryNotFoundError, OSError) as e:
        raise SourceNotFoundError(
            f"could not reach the Hugging Face Hub to fetch {repo_id!r} and it is not in the local cache "
            f"({type(e).__name__}); {hint}") from None
    folder = Path(folder)
    return Source(repo_id, folder, folder.name)


def check_supported(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)} "
            f"(LLaVA-1.5: CLIP vision tower + projector + Llama decoder)")
    text_type = config.get("text_config", {}).get("model_type", "llama")
    if text_type not in SUPPORTED_TEXT_TYPES:
        raise UnsupportedModelError(
            f"LLaVA with a {text_type!r} decoder is not supported; supported decoders: {', '.join(SUPPORTED_TEXT_TYPES)}")
