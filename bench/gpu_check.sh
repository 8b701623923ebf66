#!/bin/bash
# The fused decoder on the lent GPU, in two steps (../shared/device/README.md has the call sequence):
#
#   bash bench/gpu_check.sh build     # background, CPU onnxruntime: fixture, export (writes the fused fp32 pair)
#   bash bench/gpu_check.sh measure   # onnxruntime-gpu: fused fp16 pair (checked on CUDA), tokens on
#                                     # cpu/cuda x standard/fused/fused-fp16, the decoder steps with and
#                                     # without the CUDA graph, then just bench --provider cuda
#
# SIZE=tiny runs the same steps on the tiny fixture (to try the script on a CPU: PROVIDERS=cpu).
# Results go under $OUT (default build/gpu-check/out).
set -euo pipefail
SIZE=${SIZE:-1b}
PROVIDERS=${PROVIDERS:-cpu,cuda}
PROVIDER=${PROVIDERS##*,}
OUT=${OUT:-build/gpu-check/out}
DIR=build/1b; [ "$SIZE" = 1b ] || DIR=build/bench/$SIZE
PY=${PY:-python3}
mkdir -p "$OUT" build/gpu-check
stamp() { echo "[gpu_check $(date +%T)] $*"; }
case "${1:-}" in
build)
  rm -f build/gpu-check/BUILD_DONE build/gpu-check/BUILD_FAILED
  trap '[ -f build/gpu-check/BUILD_DONE ] || touch build/gpu-check/BUILD_FAILED' EXIT
  stamp "fixture $SIZE"; [ -f $DIR/checkpoint/config.json ] || $PY -m fixtures $DIR/checkpoint --size $SIZE
  stamp "export";        [ -f $DIR/bundle/manifest.json ] || $PY -m export $DIR/checkpoint --out $DIR/bundle --force
  touch build/gpu-check/BUILD_DONE; stamp "build done";;
measure)
  $PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" | tee $OUT/providers.txt
  while [ ! -f build/gpu-check/BUILD_DONE ] && [ ! -f build/gpu-check/BUILD_FAILED ]; do sleep 2; done
  [ -f build/gpu-check/BUILD_DONE ] || { stamp "the build failed"; exit 3; }
  has() { $PY -c "import json,sys; sys.exit(0 if '$1' in (json.load(open('$DIR/bundle/manifest.json')).get('fused_decoders') or {}) else 1)"; }
  has fp32 || { stamp "fused fp32 (parity on $PROVIDER)"; $PY -m fused $DIR/bundle --dtype fp32 --provider $PROVIDER; }
  has fp16 || { stamp "fused fp16 (parity on $PROVIDER)"; $PY -m fused $DIR/bundle --dtype fp16 --provider $PROVIDER 2>&1 | tee $OUT/fuse-fp16.log || stamp "fused fp16 failed"; }
  VARIANTS=$($PY -c "import json; f=json.load(open('$DIR/bundle/manifest.json')).get('fused_decoders') or {}; print(','.join({'fp32':'fused','fp16':'fused-fp16'}[d] for d in sorted(f, reverse=True)) or 'none')")
  stamp "tokens: $PROVIDERS x decoders"
  $PY -m bench.decoders_check $DIR/bundle --providers $PROVIDERS --tokens 16 --out $OUT/tokens-$SIZE.json
  stamp "decoder steps alone"
  $PY -m bench.decode_steps $DIR/bundle --provider $PROVIDER --prompt 591 --steps 32 --cuda-graph \
      --out $OUT/decode-steps-$SIZE.json || stamp "decode_steps failed"
  stamp "bench"
  $PY -m bench --size $SIZE --provider $PROVIDER --repeat ${REPEAT:-3} --new-tokens 32 --no-warm --no-memory \
      --variants $VARIANTS --out $OUT/bench-$SIZE-$PROVIDER.json > $OUT/bench-$SIZE-$PROVIDER.txt 2>&1 \
      || { tail -30 $OUT/bench-$SIZE-$PROVIDER.txt; exit 4; }
  tail -45 $OUT/bench-$SIZE-$PROVIDER.txt
  stamp "measure done";;
*) sed -n 2,10p "$0"; exit 2;;
esac
