"""Both trainers run end to end for a few steps on real SmolLM2 and write a run folder that assembles."""
import dataclasses
import json

import torch

from spatial import smollm2
from spatial.assemble import read_trained
from spatial.train import Trainer
from spatial.train_relation import RelationSettings, RelationTrainer
from spatial.train_settings import LOG_FILE, WEIGHTS_FILE, Settings


def _check_run(out, recipe, lora_targets):
    log = json.loads((out / LOG_FILE).read_text())
    assert log["recipe"] == recipe and log["code"]
    assert [h["stage"] for h in log["history"]][-1] == "readout"
    tensors, _, lora = read_trained(out / WEIGHTS_FILE)
    names = {k.split(".")[-2] for k in tensors if k.startswith("lora.")}
    assert names == set(lora_targets) == set(lora.targets)


def test_the_reading_trainer_runs_and_resumes(tmp_path):
    s = Settings(train_items=48, val_items=8, eyes_steps=2, readout_steps=2, eyes_batch=4, readout_batch=2,
                 val_every=1)
    Trainer(s, tmp_path, "reading", None).run()
    _check_run(tmp_path, "reading", ("q_proj", "k_proj", "v_proj", "o_proj"))
    first, _, _ = read_trained(tmp_path / WEIGHTS_FILE)
    Trainer(s, tmp_path, "reading", None).run()          # a finished run resumes to the same parameters
    again, _, _ = read_trained(tmp_path / WEIGHTS_FILE)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    longer = dataclasses.replace(s, readout_steps=3)
    Trainer(longer, tmp_path, "reading", None).run()     # a finished run given more steps trains on
    extended, _, _ = read_trained(tmp_path / WEIGHTS_FILE)
    log = json.loads((tmp_path / LOG_FILE).read_text())
    assert [h["step"] for h in log["history"] if h.get("extended_to") == 3] == [2]
    assert log["history"][-1]["step"] == 3
    assert any(not torch.equal(first[k], extended[k]) for k in first if k.startswith("lora."))


def test_the_relation_trainer_runs(tmp_path):
    s = RelationSettings(train_items=48, val_items=8, eyes_steps=2, readout_steps=2, readout_planned=4,
                         eyes_batch=4, readout_batch=2, val_every=1)
    RelationTrainer(s, tmp_path, "shipped", smollm2.resolve(None), "test").run()
    _check_run(tmp_path, "shipped", ("q_proj", "v_proj"))
