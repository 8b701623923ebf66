"""A training recipe: ``spatial/recipes/NAME.json``, the settings a run starts from.

    {"description": "...", "trainer": "reading" | "relation", "settings": {field: value, ...}}

``trainer`` picks the training code (``reading``: :mod:`spatial.train`'s reading recipe, the
default; ``relation``: :mod:`spatial.train_relation`, the recipe of the shipped parameters) and
with it the settings class; every field must be one of its fields, of the right type; the command line may override the
step counts, the time ceiling and the seed, and ``training.json`` records what was run.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from .train_relation import RelationSettings
from .train_settings import Settings

RECIPES = Path(__file__).parent / "recipes"
TRAINERS = {"reading": Settings, "relation": RelationSettings}


class RecipeError(ValueError):
    """A recipe that does not exist or does not describe ``Settings``."""


def names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.json"))


def load(name: str) -> tuple[str, Settings | RelationSettings, str]:
    """(the trainer, the recipe's settings, its description); RecipeError naming the recipes there are."""
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
    trainer = doc.get("trainer", "reading")
    if trainer not in TRAINERS:
        raise RecipeError(f"{path}: trainer {trainer!r} is none of {', '.join(TRAINERS)}")
    cls = TRAINERS[trainer]
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RecipeError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    defaults, checked = cls(), {}
    for key, value in values.items():
        want = type(getattr(defaults, key))                  # int or float
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (want is int and not isinstance(value, int)):
            raise RecipeError(f"{path}: {key} must be a {want.__name__}, got {value!r}")
        checked[key] = want(value)
    return trainer, cls(**checked), str(doc.get("description", ""))
