"""The relation recipe: how the shipped ``spatial`` parameters were trained (``--recipe shipped``).

The benchmark's own scenes and question only (the subject is always the smaller object, so the
names need not be read), horizontal flips with left/right swapped:

    stage "eyes"    CLIP tower alone, no language model:
                    mean of the 36 patch tokens -> Linear -> relation (4-way CE)
                    all patch tokens -> Linear -> relation (auxiliary)
                    each patch token -> Linear -> share of the patch inside A's / B's box (BCE)
    stage "readout" tower (lr / 10) -> projector -> SmolLM2 (frozen, LoRA rank 8 on q/v):
                    cross-entropy on the answer word ("Left") and on <|im_end|> after it

The shipped run was budgeted in minutes (14 for the eyes, 58 in all) on two quiet cores: 2,900
eyes steps, then 342 readout steps of a planned 400 (the time budget stopped it; the learning
rate followed the planned 400).  Here the same run is sized in steps, so it reruns alike on any
machine: ``eyes_steps`` 2,900, ``readout_planned`` 400 for the schedule, ``readout_steps`` 342.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import smollm2
from .architecture import (ANSWERS, EOS_TOKEN, PROMPT_TEMPLATE, LoraShape, VisionShape, llava_config,
                           tokenizer_with_image_token, vision_config)
from .scenes import RELATIONS, TRAIN_SEED_BASE, VAL_SEED_BASE, draw
from .run_files import CLIP_MEAN, CLIP_STD, write_run
from .train_settings import sincos_positions

LEFT, RIGHT = RELATIONS.index("left_of"), RELATIONS.index("right_of")


@dataclass
class RelationSettings:
    seed: int = 0
    train_items: int = 20000
    val_items: int = 128
    eyes_steps: int = 2900
    readout_steps: int = 342
    readout_planned: int = 400      # the cosine schedule's length (the shipped run stopped before it)
    minutes: float = 120.0          # a ceiling on the training steps
    eyes_batch: int = 64
    eyes_lr: float = 1e-3
    readout_batch: int = 16
    readout_lr: float = 1e-3        # projector and adapter; the tower gets a tenth of it
    eos_weight: float = 0.5
    val_every: int = 50
    checkpoint_seconds: float = 120.0


@dataclass
class Progress:
    stage: str = "eyes"
    step: int = 0
    elapsed: float = 0.0
    history: list = field(default_factory=list)


class RelationTrainer:
    def __init__(self, settings: RelationSettings, out: Path, recipe_name: str, decoder_source, code: str,
                 device: str = "cpu"):
        import torch                   # heavy, optional: torch (the export extra)

        self.torch, self.s, self.out = torch, settings, out
        self.recipe_name, self.decoder_source, self.code = recipe_name, decoder_source, code
        self.vision, self.lora_shape = VisionShape(), LoraShape(targets=("q_proj", "v_proj"))
        self.device = torch.device(device)
        torch.manual_seed(settings.seed)
        random.seed(settings.seed)
        self.progress = Progress()

    def run(self) -> None:
        from tqdm import tqdm          # optional: tqdm, with transformers (the export extra)

        self.out.mkdir(parents=True, exist_ok=True)
        self._build()
        state = self._load_state()
        with tqdm(total=self.s.train_items + self.s.val_items, desc="scenes", unit="img", leave=False) as bar:
            self.train = draw(self.s.train_items, TRAIN_SEED_BASE, self.vision.image_size, self.vision.patch_size, bar)
            self.val = draw(self.s.val_items, VAL_SEED_BASE, self.vision.image_size, self.vision.patch_size, bar)
        if self.progress.stage == "eyes":
            self._stage_eyes(state)
            state = None
        if self.progress.stage == "readout":
            self._stage_readout(state)
        self._write_weights()

    def _build(self) -> None:
        torch, nn = self.torch, self.torch.nn
        from transformers import CLIPVisionModel          # heavy, optional: transformers (the export extra)
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

        from . import lora                                # it imports torch

        torch.manual_seed(self.s.seed)
        self.tower = CLIPVisionModel(vision_config(self.vision))
        with torch.no_grad():
            self.tower.vision_model.embeddings.position_embedding.weight.copy_(
                sincos_positions(self.vision.grid, self.vision.hidden_size))
        h = self.vision.hidden_size
        self.relation_head = nn.Linear(h, 4)                                  # on the mean patch token
        self.layout_head = nn.Linear(h * self.vision.image_tokens, 4)         # on all patch tokens
        self.patch_head = nn.Linear(h, 2)
        print(f"[train] loading SmolLM2 from {self.decoder_source.description}", file=sys.stderr)
        self.lm, smol_tok = smollm2.load(self.decoder_source)
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.tokenizer, self.image_id = tokenizer_with_image_token(smol_tok)
        torch.manual_seed(self.s.seed + 1)
        self.projector = LlavaMultiModalProjector(llava_config(self.vision, self.lm.config, self.image_id))
        self.adapters = lora.attach(self.lm.model.layers, self.lora_shape)
        self.answer_ids = [self.tokenizer.encode(ANSWERS[r], add_special_tokens=False).ids[0] for r in RELATIONS]
        self.eos_id = self.tokenizer.token_to_id(EOS_TOKEN)
        self.modules = {"tower": self.tower, "relation_head": self.relation_head, "layout_head": self.layout_head,
                        "patch_head": self.patch_head, "projector": self.projector}
        for m in (self.lm, *self.modules.values()):
            m.to(self.device)

    # ------------------------------------------------------------------ data

    def _pixels(self, scenes, idx, flip):
        """float32 [B, 3, S, S] normalised as CLIPImageProcessor does, flipped where ``flip``."""
        torch = self.torch
        x = torch.from_numpy(scenes.pixels[idx]).float() / 255.0                 # [B, S, S, 3]
        x = ((x - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).permute(0, 3, 1, 2).contiguous()
        f = torch.from_numpy(flip)
        x[f] = x[f].flip(-1)
        return x.to(self.device)

    def _labels(self, scenes, idx, flip):
        """Relations [B] with left/right swapped where flipped; patch covers [B, T, 2] mirrored likewise."""
        torch = self.torch
        rel = torch.from_numpy(scenes.relation[idx]).clone()
        cover = torch.from_numpy(scenes.cover[idx]).clone()
        g, f = self.vision.grid, torch.from_numpy(flip)
        swapped = rel.clone()
        swapped[rel == LEFT], swapped[rel == RIGHT] = RIGHT, LEFT
        mirrored = cover.view(-1, g, g, 2).flip(2).reshape(-1, g * g, 2)
        return (torch.where(f, swapped, rel).to(self.device),
                torch.where(f[:, None, None], mirrored, cover).to(self.device))

    def _features(self, pixels):
        return self.tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]   # [B, T, H]

    # ------------------------------------------------------------------ stage 1

    def _stage_eyes(self, state) -> None:
        torch, F = self.torch, self.torch.nn.functional
        from tqdm import tqdm          # optional: tqdm, with transformers (the export extra)

        params = [p for name in ("tower", "relation_head", "layout_head", "patch_head")
                  for p in self.modules[name].parameters()]
        opt = torch.optim.AdamW(params, lr=self.s.eyes_lr, weight_decay=0.01)
        rng = np.random.default_rng(self.s.seed)
        if state is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
            rng = state["rng"]
        total = self.s.eyes_steps
        bar = tqdm(desc="stage 1/2 eyes", unit="step", total=total, initial=self.progress.step)
        last_ckpt, t_step = time.perf_counter(), time.perf_counter()
        while self.progress.step < total:
            step = self.progress.step
            for g in opt.param_groups:
                g["lr"] = self.s.eyes_lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / total))
            idx = rng.integers(0, len(self.train), self.s.eyes_batch)
            flip = rng.random(len(idx)) < 0.5
            rel, cover = self._labels(self.train, idx, flip)
            feats = self._features(self._pixels(self.train, idx, flip))                  # [B, T, H]
            loss_rel = F.cross_entropy(self.relation_head(feats.mean(1)), rel)
            loss = (loss_rel + F.cross_entropy(self.layout_head(feats.flatten(1)), rel)
                    + F.binary_cross_entropy_with_logits(self.patch_head(feats), cover))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.progress.step += 1
            self.progress.elapsed += time.perf_counter() - t_step
            t_step = time.perf_counter()
            bar.update(1)
            bar.set_postfix(rel=f"{loss_rel.item():.3f}")
            if self.progress.step % 100 == 0 or self.progress.step == total:
                self._log(stage="eyes", step=self.progress.step, loss_relation=round(loss_rel.item(), 4),
                          val_relation_accuracy=self._eyes_accuracy())
            if time.perf_counter() - last_ckpt > self.s.checkpoint_seconds:
                self._save_state(opt, rng)
                last_ckpt = time.perf_counter()
        bar.close()
        self.progress.stage, self.progress.step = "readout", 0
        self._save_state(None, None)

    def _eyes_accuracy(self) -> float:
        torch = self.torch
        self.tower.eval()
        with torch.no_grad():
            idx = np.arange(len(self.val))
            feats = self._features(self._pixels(self.val, idx, np.zeros(len(idx), bool)))
            pred = self.relation_head(feats.mean(1)).argmax(-1).cpu().numpy()
        self.tower.train()
        return float((pred == self.val.relation).mean())

    # ------------------------------------------------------------------ stage 2

    def _batch(self, scenes, idx, flip, with_answer: bool):
        """(input_ids [B, L] right-padded, image start, last prompt positions [B], targets [B, 2])."""
        torch = self.torch
        rel, _ = self._labels(scenes, idx, flip)
        rows, last, targets = [], [], []
        for k, i in enumerate(idx):
            ids = self.tokenizer.encode(PROMPT_TEMPLATE.format(question=scenes.questions[i]),
                                        add_special_tokens=True).ids
            at = ids.index(self.image_id)
            ids = ids[:at] + [self.image_id] * self.vision.image_tokens + ids[at + 1:]
            word = self.answer_ids[int(rel[k])]
            last.append(len(ids) - 1)
            targets.append((word, self.eos_id))
            rows.append(ids + ([word] if with_answer else []))
        ids = torch.zeros((len(rows), max(len(r) for r in rows)), dtype=torch.long)   # pad id 0, after the text
        for k, r in enumerate(rows):
            ids[k, : len(r)] = torch.tensor(r)
        dev = self.device
        return ids.to(dev), rows[0].index(self.image_id), torch.tensor(last, device=dev), torch.tensor(targets, device=dev)

    def _hidden(self, ids, start, pixels):
        """Decoder hidden states [B, L, 576] with the image tokens from tower + projector."""
        embeds = self.lm.model.embed_tokens(ids.clamp(max=self.lm.config.vocab_size - 1))   # [B, L, 576]
        image = self.projector(self._features(pixels))                                      # [B, T, 576]
        t = self.vision.image_tokens
        embeds = self.torch.cat([embeds[:, :start], image, embeds[:, start + t:]], dim=1)
        return self.lm.model(inputs_embeds=embeds).last_hidden_state

    def _stage_readout(self, state) -> None:
        torch, F = self.torch, self.torch.nn.functional
        from tqdm import tqdm          # optional: tqdm, with transformers (the export extra)

        groups = [{"params": list(self.projector.parameters()), "lr": self.s.readout_lr},
                  {"params": [p for a in self.adapters.values() for p in (a.A, a.B)], "lr": self.s.readout_lr},
                  {"params": list(self.tower.parameters()), "lr": self.s.readout_lr / 10}]
        base = [g["lr"] for g in groups]
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        rng = np.random.default_rng(self.s.seed + 2)
        if state is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
            rng = state["rng"]
        bar = tqdm(desc="stage 2/2 readout", unit="step", total=self.s.readout_steps, initial=self.progress.step)
        last_ckpt, t_step = time.perf_counter(), time.perf_counter()
        while self.progress.step < self.s.readout_steps:
            if self.progress.elapsed > self.s.minutes * 60:
                self._log(stage="readout", step=self.progress.step, stopped="time ceiling")
                break
            step = self.progress.step
            warm = min(1.0, (step + 1) / 20)
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / self.s.readout_planned)))
            idx = rng.integers(0, len(self.train), self.s.readout_batch)
            flip = rng.random(len(idx)) < 0.5
            ids, start, last, targets = self._batch(self.train, idx, flip, with_answer=True)
            hidden = self._hidden(ids, start, self._pixels(self.train, idx, flip))          # [B, L, 576]
            rows = torch.arange(len(idx), device=self.device)
            logits = self.lm.lm_head(torch.stack([hidden[rows, last], hidden[rows, last + 1]], dim=1))   # [B, 2, V]
            loss = F.cross_entropy(logits[:, 0], targets[:, 0]) + self.s.eos_weight * F.cross_entropy(
                logits[:, 1], targets[:, 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.progress.step += 1
            self.progress.elapsed += time.perf_counter() - t_step
            t_step = time.perf_counter()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if self.progress.step % self.s.val_every == 0 or self.progress.step == self.s.readout_steps:
                self._log(stage="readout", step=self.progress.step, loss=round(loss.item(), 4),
                          val_first_token_accuracy=self._readout_accuracy())
            if time.perf_counter() - last_ckpt > self.s.checkpoint_seconds:
                self._save_state(opt, rng)
                last_ckpt = t_step = time.perf_counter()
        bar.close()
        self.progress.stage = "done"
        self._save_state(None, None)

    def _readout_accuracy(self) -> float:
        """Greedy first answer token (whole vocabulary) against the gold word, on the validation scenes."""
        torch = self.torch
        self.tower.eval()
        right = 0
        with torch.no_grad():
            for lo in range(0, len(self.val), 32):
                idx = np.arange(lo, min(lo + 32, len(self.val)))
                flip = np.zeros(len(idx), dtype=bool)
                ids, start, last, targets = self._batch(self.val, idx, flip, with_answer=False)
                hidden = self._hidden(ids, start, self._pixels(self.val, idx, flip))
                pred = self.lm.lm_head(hidden[torch.arange(len(idx), device=self.device), last]).argmax(-1)
                right += int((pred == targets[:, 0]).sum())
        self.tower.train()
        return right / len(self.val)

    # ------------------------------------------------------------------ state and output

    def _log(self, **row) -> None:
        row["elapsed_s"] = round(self.progress.elapsed, 1)
        self.progress.history.append(row)

    def _save_state(self, opt, rng) -> None:
        state = {"settings": asdict(self.s), "progress": asdict(self.progress),
                 **{name: m.state_dict() for name, m in self.modules.items()},
                 "lora": {f"{k}.{n}": getattr(a, n).detach().clone() for k, a in self.adapters.items() for n in "AB"},
                 "optimizer": opt.state_dict() if opt is not None else None, "rng": rng}
        tmp = self.out / "state.tmp"
        self.torch.save(state, tmp)
        os.replace(tmp, self.out / "state.pt")

    def _load_state(self):
        path = self.out / "state.pt"
        if not path.exists():
            return None
        state = self.torch.load(path, weights_only=False, map_location=self.device)
        if state["settings"] != asdict(self.s):
            raise SystemExit(f"{path} was written with other settings ({state['settings']}); "
                             f"remove {self.out} to start over, or rerun with the same options")
        self.progress = Progress(**state["progress"])
        for name, m in self.modules.items():
            m.load_state_dict(state[name])
        for key, a in self.adapters.items():
            a.A.data.copy_(state["lora"][f"{key}.A"])
            a.B.data.copy_(state["lora"][f"{key}.B"])
        return state

    def _write_weights(self) -> None:
        write_run(self.out, self.tower, self.projector, self.adapters, self.vision, self.lora_shape,
                  self.decoder_source, {"recipe": self.recipe_name, "settings": asdict(self.s), "code": self.code,
                                        "history": self.progress.history}, self.progress.elapsed)
