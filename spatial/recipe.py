"""A training recipe: ``spatial/recipes/NAME.json``, the settings a run starts from.

    {"description": "...", "settings": {field of train_settings.Settings: value, ...}}

Every field must be a ``Settings`` field of the right type; the command line may override the
step counts, the time ceiling and the seed, and ``training.json`` records what was run.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from .train_settings import Settings

RECIPES = Path(__file__).parent / "recipes"


class RecipeError(ValueError):
    """A recipe that does not exist or does not describe ``Settings``."""


def names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.json"))


def load(name: str) -> tuple[Settings, str]:
    """(the recipe's settings, its description); RecipeError naming the recipes there are."""
    path = RECIPES / f"{name}.json"
    if not path.is_file():
        raise RecipeError(f"no recipe {name!r}: choose from {', '.join(names())} ({RECIPES})")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RecipeError(f"{path}: not JSON ({e})") from None
    values = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: needs a 'settings' object")
    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RecipeError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    defaults, checked = Settings(), {}
    for key, value in values.items():
        want = type(getattr(defaults, key))                  # int or float
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (want is int and not isinstance(value, int)):
            raise RecipeError(f"{path}: {key} must be a {want.__name__}, got {value!r}")
        checked[key] = want(value)
    return Settings(**checked), str(doc.get("description", ""))
