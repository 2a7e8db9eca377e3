#!/usr/bin/env bash
# The GPU check, in one go on a CUDA machine (BENCHMARKS.md "GPU (CUDA)"):
#   1. the CUDA tests: tests/gpu (pretrain bf16 + compile -> finetune -> evaluate -> analyze with the real CLI)
#      and the [cuda] cases of the device-parametrized tests (optimized vs plain loop, sampler vs `generate`);
#   2. llama2-0.5b pretraining (seq 2048, micro-batch 8, bf16), eager and compiled: tok/s and MFU;
#   3. `plasticity bench --quick` (GEMM peaks, HF eager vs our loop, sampler vs `generate`, cloze, analysis).
# Usage, from the repository root: bash benchmarks/gpu_check.sh [OUT_DIR]   (Python with torch+CUDA on PATH as
# python3, or PYTHON=...; a ./.whl folder of wheels is installed first, a ./.gpu_cache folder is the data cache).
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PLASTICITY_TEST_FORK=0
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu_cache ] && export PLASTICITY_CACHE="$PWD/.gpu_cache"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
      torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())" | tee -a "$OUT/gpu.txt"

echo "== 1. CUDA tests"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m "" -k cuda -rs \
  tests/gpu tests/foundation/test_fast_path.py tests/evaluate/test_sampler.py 2>&1 | tee "$OUT/tests.log" | tail -15

echo "== 2. ${MFU_PRESET:-llama2-0.5b} pretraining, bf16, eager vs compiled"
STEPS=${MFU_STEPS:-30} PRESET=${MFU_PRESET:-llama2-0.5b} SEQ=${MFU_SEQ:-2048}  # (smaller ones to try the script on a CPU)
for compile in false true; do
  timeout 140 "$PY" -m plasticity.cli pretrain model.preset="$PRESET" data.source=packaged:bbc_news \
    tokenizer.vocab_size=32000 data.seq_len="$SEQ" train.micro_batch_size=8 train.precision=bf16 \
    train.compile=$compile train.max_steps="$STEPS" train.log_every=5 train.eval_sequences=8 \
    train.eval_max_sequences=8 train.checkpoint_fractions=[] out_dir="/tmp/mfu-$compile" \
    > "$OUT/mfu-$compile.log" 2>&1 || { echo "pretrain compile=$compile failed:"; tail -20 "$OUT/mfu-$compile.log"; }
  cp "/tmp/mfu-$compile/metrics.jsonl" "$OUT/mfu-$compile.metrics.jsonl" 2>/dev/null
  cp "/tmp/mfu-$compile/summary.json" "$OUT/mfu-$compile.summary.json" 2>/dev/null
done
"$PY" - "$OUT" <<'EOF'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows, fpt = {}, None
for c in ("false", "true"):
    p, s = out / f"mfu-{c}.metrics.jsonl", out / f"mfu-{c}.summary.json"
    if not s.exists():
        continue
    fpt = json.loads(s.read_text())["flops_per_token"]  # 6N + 12 L d T (PaLM appendix B), T = seq_len
    recs = [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []
    tps = [r["tok_per_s"] for r in recs if "tok_per_s" in r and r["step"] > 10]  # after warm-up / compilation
    if tps:
        t = statistics.median(tps)
        rows[f"compile={c}"] = {"tok_per_s": t, "tflops": t * fpt / 1e12, "mfu_vs_989": t * fpt / 989e12}
for k, v in rows.items():
    print(f"{k:14s} {v['tok_per_s']:>10,.0f} tok/s {v['tflops']:7.1f} TFLOP/s  MFU {100 * v['mfu_vs_989']:.1f}% "
          "(of 989 TFLOP/s dense bf16)")
(out / "mfu.json").write_text(json.dumps({"flops_per_token": fpt, **rows}, indent=1))
EOF

echo "== 3. plasticity bench --quick"
timeout 120 "$PY" -m plasticity.cli bench ${BENCH_FLAGS:---quick} --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
tail -30 "$OUT/bench.log"
