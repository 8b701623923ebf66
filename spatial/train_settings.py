"""The spatial model's training settings and progress record, and the tower's fixed position code."""
from __future__ import annotations

from dataclasses import dataclass, field

#: What a training run writes into its folder (and shipping copies into spatial/weights/).
WEIGHTS_FILE = "spatial-smollm2-135m.safetensors"
LOG_FILE = "training.json"


@dataclass
class Settings:
    seed: int = 0
    train_items: int = 12000        # drawn once (one seed each, from 1000): ~1.5 min
    val_items: int = 128            # seeds 500000..: never the benchmark's 0..999
    eyes_steps: int = 500           # batch 64: ~1.4-3 s a step on 2 cores shared with others
    readout_steps: int = 120        # batch 8: ~13-22 s a step there
    minutes: float = 75.0           # a ceiling on the training steps, however busy the CPU is
    eyes_batch: int = 64
    eyes_lr: float = 1e-3
    embed_weight: float = 1.0       # the projector's match to SmolLM2's word embeddings
    readout_batch: int = 8          # 30 layers x ~75 tokens, forward + backward
    readout_lr: float = 1e-3        # projector and adapter; the tower gets a tenth of it
    eos_weight: float = 0.5         # the answer matters most; <|im_end|> keeps answers short
    val_every: int = 30
    checkpoint_seconds: float = 120.0


#: Settings a resumed run may change: the step counts, the time ceiling, how often to validate.
RESIZABLE = ("eyes_steps", "readout_steps", "minutes", "val_every")


@dataclass
class Progress:
    stage: str = "eyes"
    step: int = 0
    elapsed: float = 0.0            # seconds of training so far, over every resumed run
    history: list = field(default_factory=list)


def sincos_positions(grid: int, width: int):
    """[1 + grid * grid, width]: row 0 (CLS) zeros, then a 2-D sine-cosine code per patch, row-major."""
    import torch                       # heavy, optional: torch (the export extra)

    quarter = width // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))    # [W/4]
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    ay = ys.reshape(-1, 1) * freq                                                      # [G*G, W/4]
    ax = xs.reshape(-1, 1) * freq                                                      # [G*G, W/4]
    code = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)                  # [G*G, W]
    return torch.cat([torch.zeros(1, width), code], dim=0)
