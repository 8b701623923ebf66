"""LLaVA-1.5: CLIP at a fixed size, a fixed run of image tokens, 1-D positions."""
from .family import Family

LLAVA = Family("llava", "LLaVA-1.5", "LlavaForConditionalGeneration", positions="1d", mrope_interleaved=False,
               preprocessing="clip", image_layout="fixed")
