"""Qwen2.5-VL and Qwen3-VL to ONNX: the vision, embed and steered decoder graphs, checked against PyTorch.

    vision.py     the tower with its grid-only index tensors as inputs (one graph, every image size)
    decoder.py    the embedding and the steered M-RoPE decoder (KV cache, DeepStack inputs)
    onnx_export.py  torch.onnx.export of the three wrappers
    parity.py     ONNX Runtime against transformers / the AdaptVis reference, tolerances by fp32 rounding
    bundle.py     export_qwen: a bundle folder written whole or not at all
"""
