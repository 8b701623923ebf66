"""Training recipes: the named settings files the trainer starts from, and the run folder it writes."""
import json
from pathlib import Path

import pytest

from spatial import recipe
from spatial.train import main as train_main
from spatial.train_settings import Settings


def test_the_reading_recipe_loads_as_settings():
    trainer, settings, description = recipe.load("reading")
    assert trainer == "reading" and isinstance(settings, Settings) and description
    assert settings.readout_batch == 16 and settings.eyes_steps == 2500
    assert isinstance(settings.minutes, float)


def test_an_unknown_recipe_names_the_ones_there_are():
    with pytest.raises(recipe.RecipeError, match="choose from .*reading"):
        recipe.load("no-such-recipe")


@pytest.mark.parametrize("settings, match", [
    ({"eyes_steps": 10, "typo_steps": 3}, "unknown settings"),
    ({"eyes_steps": "10"}, "eyes_steps must be a int"),
    ({"eyes_steps": 10.5}, "eyes_steps must be a int"),
    ({"minutes": True}, "minutes must be a float"),
])
def test_a_recipe_with_bad_settings_is_refused(tmp_path, monkeypatch, settings, match):
    (tmp_path / "bad.json").write_text(json.dumps({"settings": settings}))
    monkeypatch.setattr(recipe, "RECIPES", tmp_path)
    with pytest.raises(recipe.RecipeError, match=match):
        recipe.load("bad")


def test_training_never_writes_the_shipped_parameters(capsys):
    with pytest.raises(SystemExit):
        train_main(["--out", "spatial/weights"])
    assert "just ship-spatial" in capsys.readouterr().err


def test_the_shipped_recipe_states_the_shipped_run():
    """The shipped parameters' log and the recipe agree on what was run (steps, batches, rates, seed)."""
    from spatial.train_relation import RelationSettings
    from spatial.train_settings import LOG_FILE

    trainer, settings, _ = recipe.load("shipped")
    assert trainer == "relation" and isinstance(settings, RelationSettings)
    log = json.loads((Path(__file__).parents[2] / "spatial" / "weights" / LOG_FILE).read_text())
    for key in ("seed", "train_items", "val_items", "eyes_batch", "eyes_lr", "readout_batch", "readout_lr",
                "eos_weight", "val_every"):
        assert getattr(settings, key) == log["settings"][key], key
    done = {h["stage"]: h["step"] for h in log["history"] if h.get("done")}
    assert (settings.eyes_steps, settings.readout_steps) == (done["eyes"], done["readout"])
