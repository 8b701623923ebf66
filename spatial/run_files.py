"""What a training run leaves in its folder: the parameters file and ``training.json``, for either trainer."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .architecture import LoraShape, VisionShape, shapes_metadata
from .train_settings import LOG_FILE, WEIGHTS_FILE

#: CLIPImageProcessor's normalisation: the runtime feeds the tower pixels normalised so.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def write_run(out: Path, tower, projector, adapters: dict, vision: VisionShape, lora_shape: LoraShape,
              decoder_source, log: dict, elapsed: float) -> None:
    """``out/WEIGHTS_FILE`` (tower, projector, LoRA as fp32) and ``out/LOG_FILE`` (``log`` plus shapes and sizes)."""
    from safetensors.torch import save_file           # heavy, optional: torch (the export extra)

    from .lora import adapter_tensors                 # it imports torch

    tensors = {f"vision_tower.{k}": v for k, v in tower.state_dict().items()}
    tensors.update({f"multi_modal_projector.{k}": v for k, v in projector.state_dict().items()})
    tensors.update(adapter_tensors(adapters))
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    out.mkdir(parents=True, exist_ok=True)
    shapes = shapes_metadata(vision, lora_shape)
    meta = {"format": "adaptvis-edge/spatial/1", "shapes": json.dumps(shapes),
            "decoder": decoder_source.description.split("/")[-1]}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata=meta)
    log = {**log, "shapes": shapes, "decoder": meta["decoder"], "training_wall_s": round(elapsed, 1),
           "parameters": {k: int(sum(v.numel() for n, v in tensors.items() if n.startswith(k)))
                          for k in ("vision_tower", "multi_modal_projector", "lora")}}
    (out / LOG_FILE).write_text(json.dumps(log, indent=1) + "\n")
    size = (out / WEIGHTS_FILE).stat().st_size
    print(f"[train] wrote {out / WEIGHTS_FILE} ({size / 1e6:.1f} MB) and {LOG_FILE}; "
          f"training took {elapsed / 60:.1f} min", file=sys.stderr)
