#!/usr/bin/env bash
# The GPU check, in one go on a CUDA machine (BENCHMARKS.md "GPU (CUDA)"), sized for < 8 minutes on one H200:
#   tests    the CUDA tests: tests/gpu (pretrain bf16 -> finetune -> evaluate -> analyze with the real CLI) and the
#            [cuda] cases of the device-parametrized tests (optimized vs plain loop, sampler vs `generate`);
#   mfu      `plasticity pretrain model.preset=llama2-0.5b data.seq_len=2048` with the SHIPPED defaults
#            (micro-batch 16, precision auto = bf16, compile auto, master weights auto), killed after MFU_SECONDS; tok/s and MFU read
#            from the run's own metrics.jsonl after warm-up; by default a second arm with autocast instead of the
#            bf16 master weights (`autocast:train.master_weights=false`); MFU_ARMS sets the arms, e.g.
#            MFU_ARMS="default mb8:train.micro_batch_size=8 eager:train.compile=false sdpa=cudnn";
#   profile  benchmarks/gpu_profile.py: eager step per attention backend, kernel time by category
#            (PROFILE_FLAGS=--master-weights: on bf16 weight copies instead of autocast);
#   engine   benchmarks/bench_engine.py: the sampler vs `model.generate` and transformers' `generate_batch`,
#            512 prompts x k=16, <= 512 new tokens;
#   bench    `plasticity bench --quick`.
# Usage, from the repository root: bash benchmarks/gpu_check.sh [OUT_DIR]   (GPU_CHECK_PARTS="mfu engine" to run
# some parts; Python with torch+CUDA on PATH as python3, or PYTHON=...; a ./.whl folder of wheels is installed
# first). Writes OUT_DIR/summary.json (every part's numbers) and one log per part.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
PARTS=" ${GPU_CHECK_PARTS:-tests mfu engine bench} "
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PLASTICITY_TEST_FORK=0
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PLASTICITY_CACHE=${PLASTICITY_CACHE:-/tmp/plasticity-cache}
START=$SECONDS
# every part's time limit is capped by what is left of GPU_CHECK_BUDGET (default 470 s): the script ends within
# 8 minutes whatever a part does, so a 15-minute lease has room for a rerun
budget() {
  local left=$(( ${GPU_CHECK_BUDGET:-470} - (SECONDS - START) ))
  (( left < 15 )) && left=15
  echo $(( $1 < left ? $1 : left ))
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
      torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())" | tee -a "$OUT/gpu.txt"
git log -1 --format='commit %H %cd' 2>/dev/null | tee -a "$OUT/gpu.txt"

if [[ $PARTS == *" tests "* ]]; then
  echo "== tests: CUDA ($((SECONDS - START)) s)"
  timeout "$(budget "${TESTS_SECONDS:-150}")" "$PY" -m pytest -q -p no:cacheprovider -m "" -k cuda -rs \
    tests/gpu tests/train/test_fast_path.py tests/evaluate/test_sampler.py \
    > "$OUT/tests.log" 2>&1
  tail -5 "$OUT/tests.log"
fi

if [[ $PARTS == *" mfu "* ]]; then
  for arm in ${MFU_ARMS:-default autocast:train.master_weights=false}; do
    name=${arm%%:*}
    overrides=()
    [[ $arm == *:* ]] && IFS=',' read -r -a overrides <<< "${arm#*:}"
    envs=()
    [[ $name == sdpa=* ]] && envs=(PLASTICITY_SDPA_BACKEND="${name#sdpa=}")
    echo "== mfu: $name ${overrides[*]:-} ($((SECONDS - START)) s)"
    rm -rf "/tmp/mfu-$name"
    env "${envs[@]}" timeout -s KILL "$(budget "${MFU_SECONDS:-100}")" "$PY" -m plasticity.cli pretrain \
      model.preset="${MFU_PRESET:-llama2-0.5b}" data.source=packaged:bbc_news tokenizer.vocab_size=32000 \
      data.seq_len="${MFU_SEQ:-2048}" "${overrides[@]}" out_dir="/tmp/mfu-$name" > "$OUT/mfu-$name.log" 2>&1
    cp "/tmp/mfu-$name/metrics.jsonl" "$OUT/mfu-$name.metrics.jsonl" 2>/dev/null
    cp "/tmp/mfu-$name/run_info.json" "$OUT/mfu-$name.run_info.json" 2>/dev/null
    grep -E "torch.compile|master weights|params|Error|error" "$OUT/mfu-$name.log" | head -6
  done
  "$PY" - "$OUT" <<'EOF'
import json, os, statistics, sys
from pathlib import Path
from plasticity.models import ModelShape, build_model, count_params, flops_per_token
out = Path(sys.argv[1])
rows = {}
for m in sorted(out.glob("mfu-*.metrics.jsonl")):
    name = m.name[len("mfu-"):-len(".metrics.jsonl")]
    info = json.loads((out / f"mfu-{name}.run_info.json").read_text())
    shape = info["shape"]
    sh = ModelShape(**shape)
    fpt = flops_per_token(count_params(build_model(sh, device="meta")), sh, int(os.environ.get("MFU_SEQ", 2048)))
    recs = [json.loads(x) for x in m.read_text().splitlines() if x.strip()]
    recs = [r for r in recs if "tok_per_s" in r]
    tps = [r["tok_per_s"] for r in recs[2:]]  # after warm-up / compilation: the first two log windows dropped
    if tps:
        t = statistics.median(tps)
        rows[name] = {"tok_per_s": t, "tflops": round(t * fpt / 1e12, 1), "mfu": round(t * fpt / 989e12, 4),
                      "steps_logged": recs[-1]["step"], "tokens_per_step": info["tokens_per_step"],
                      "flops_per_token": fpt}
for k, v in rows.items():
    print(f"{k:16s} {v['tok_per_s']:>10,.0f} tok/s {v['tflops']:7.1f} TFLOP/s  MFU {100 * v['mfu']:.1f}% "
          f"(of 989 TFLOP/s dense bf16; {v['steps_logged']} steps x {v['tokens_per_step']:,} tokens)")
(out / "mfu.json").write_text(json.dumps(rows, indent=1))
EOF
fi

if [[ $PARTS == *" profile "* ]]; then
  echo "== profile ($((SECONDS - START)) s)"
  timeout "$(budget 150)" "$PY" benchmarks/gpu_profile.py ${PROFILE_FLAGS:-} --json "$OUT/profile.json" > "$OUT/profile.log" 2>&1
  grep -v '^{' "$OUT/profile.log" | tail -16
fi

if [[ $PARTS == *" engine "* ]]; then
  echo "== engine: sampler vs generate ($((SECONDS - START)) s)"
  timeout "$(budget "${ENGINE_SECONDS:-170}")" "$PY" benchmarks/bench_engine.py ${ENGINE_FLAGS:-} --json "$OUT/engine.json" \
    > "$OUT/engine.log" 2>&1
  grep -v '^{' "$OUT/engine.log" | tail -6
fi

if [[ $PARTS == *" bench "* ]]; then
  echo "== plasticity bench --quick ($((SECONDS - START)) s)"
  timeout "$(budget 100)" "$PY" -m plasticity.cli bench ${BENCH_FLAGS:---quick} --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
  tail -14 "$OUT/bench.log"
fi

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = {"gpu": (out / "gpu.txt").read_text().strip().splitlines()}
for part in ("mfu", "profile", "engine", "bench"):
    p = out / f"{part}.json"
    if p.exists():
        try:
            summary[part] = json.loads(p.read_text())
        except ValueError:
            summary[part] = p.read_text()[-2000:]
t = out / "tests.log"
if t.exists():
    summary["tests"] = t.read_text().strip().splitlines()[-1:]
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print("summary:", out / "summary.json")
EOF
echo "== done in $((SECONDS - START)) s"
