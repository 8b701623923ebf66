"""Export-time parity: the ONNX graphs in ONNX Runtime against the PyTorch wrappers.

Same weights, same inputs.  The decoder is checked the way the runtime uses it:
for alpha in {0.5, 1, 2} and a random per-layer-per-head scale (which catches a
transposed [layer, head] layout), a prefill of the prompt but its last token,
then three cached single-token steps, comparing logits and every present K/V.
The reference runs in fp32 (for an fp16 export: on the fp16-rounded weights),
so the difference measures the exported graph's own arithmetic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from graphs.contracts import decoder_contract
from .errors import ParityError

FP32_TOLERANCE = 1e-4
# fp16 graphs: logits of a random model reach |10|; fp16 carries ~3 decimal digits.
FP16_TOLERANCE = 5e-2
ALPHAS = (0.5, 1.0, 2.0)
CACHED_STEPS = 3


def check_parity(folder: Path, wrappers: dict, llava_config, dtype: str, seed: int = 0) -> dict[str, float]:
    """Returns {graph: max |diff|}; raises ParityError naming the output that differs."""
    import onnxruntime as ort

    tolerance = FP16_TOLERANCE if dtype == "fp16" else FP32_TOLERANCE
    np_float = np.float16 if dtype == "fp16" else np.float32
    gen = torch.Generator().manual_seed(seed)
    sessions = {name: ort.InferenceSession(str(Path(folder) / f"{name}.onnx"), providers=["CPUExecutionProvider"])
                for name in ("vision", "embed", "decoder")}
    worst: dict[str, float] = {}

    def compare(graph: str, name: str, got: np.ndarray, want: torch.Tensor, context: str) -> None:
        diff = float(np.max(np.abs(got.astype(np.float32) - want.float().numpy()))) if got.size else 0.0
        worst[graph] = max(worst.get(graph, 0.0), diff)
        if not diff <= tolerance:     # also catches NaN
            raise ParityError(f"{graph} graph output {name!r} differs from PyTorch by {diff:.3g} "
                              f"(tolerance {tolerance:g}, {dtype}) in {context}")

    size = llava_config.vision_config.image_size
    pixels = torch.randn(1, 3, size, size, generator=gen)                       # [1, 3, H, W]
    with torch.no_grad():
        features = wrappers["vision"](pixels)                                    # [1, T, C]
    got = sessions["vision"].run(None, {"pixel_values": pixels.numpy().astype(np_float)})[0]
    compare("vision", "image_features", got, features, "a random image")

    text = llava_config.text_config
    image_id = llava_config.image_token_index
    tokens = features.shape[1]
    ids = torch.cat([torch.tensor([1]), torch.randint(5, 60, (3,), generator=gen), torch.full((tokens,), image_id),
                     torch.randint(5, 60, (6,), generator=gen)])[None]          # [1, n]
    with torch.no_grad():
        embeds = wrappers["embed"](ids)                                          # [1, n, C]
    got = sessions["embed"].run(None, {"input_ids": ids.numpy()})[0]
    compare("embed", "inputs_embeds", got, embeds, "prompt ids")
    embeds = embeds.clone()
    embeds[ids == image_id] = features.reshape(-1, features.shape[-1]).to(embeds.dtype)
    image_mask = ids == image_id                                                 # [1, n]

    layers, heads = text.num_hidden_layers, text.num_attention_heads
    scales = [torch.full((1, layers, heads), a) for a in ALPHAS]
    scales.append(torch.rand(1, layers, heads, generator=gen) * 1.5 + 0.5)
    step_ids = torch.randint(5, 60, (CACHED_STEPS,), generator=gen)
    for scale in scales:
        label = f"alpha={scale.flatten()[0].item():.2f}" + ("" if scale.unique().numel() == 1 else " per-layer-head")
        _check_decoder(sessions["decoder"], wrappers, text, embeds, image_mask, step_ids, scale, np_float,
                       lambda n, g, w, c: compare("decoder", n, g, w, f"{label}, {c}"))
    return worst


def _check_decoder(session, wrappers, text, embeds, image_mask, step_ids, scale, np_float, compare) -> None:
    contract = decoder_contract(text.num_hidden_layers)
    kv_heads = text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    dtype = next(wrappers["decoder"].parameters()).dtype
    past = [torch.zeros(1, kv_heads, 0, head_dim, dtype=dtype) for _ in range(2 * text.num_hidden_layers)]
    ort_past = [p.numpy().astype(np_float) for p in past]
    n = embeds.shape[1]
    chunks = [(embeds[:, : n - 1], "prefill")] + [(None, f"cached step {i + 1}") for i in range(len(step_ids))]
    full_mask = torch.cat([image_mask, torch.zeros(1, len(step_ids), dtype=torch.bool)], dim=1)
    done = 0
    for i, (chunk, context) in enumerate(chunks):
        if chunk is None:
            token = step_ids[i - 1: i][None]                                     # [1, 1]
            with torch.no_grad():
                chunk = wrappers["embed"](token) if i > 1 else embeds[:, n - 1:]
        seq = chunk.shape[1]
        total = done + seq
        feeds = dict(inputs_embeds=chunk.to(dtype), attention_mask=torch.ones(1, total, dtype=torch.int64),
                     position_ids=torch.arange(done, total)[None], image_attention_scale=scale,
                     image_token_mask=full_mask[:, :total])
        with torch.no_grad():
            want = wrappers["decoder"](feeds["inputs_embeds"], feeds["attention_mask"], feeds["position_ids"],
                                       past, scale, feeds["image_token_mask"])
        ort_feeds = {k: (v.numpy().astype(np_float) if v.is_floating_point() and k != "image_attention_scale"
                         else v.numpy()) for k, v in feeds.items()}
        ort_feeds.update(zip(contract.input_names[3:-2], ort_past))
        got = session.run(contract.output_names, ort_feeds)
        for name, g, w in zip(contract.output_names, got, want):
            compare(name, g, w, context)
        past, ort_past = list(want[1:]), list(got[1:])
        done = total
