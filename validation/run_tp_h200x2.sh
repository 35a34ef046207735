#!/usr/bin/env bash
# TP1 vs TP2 measurements and the NCCL all-reduce sweep on a 2-GPU machine (see README_tp.md).
# Usage: OUT=/some/dir bash validation/run_tp_h200x2.sh [main|extra|big1|heldout]
# Writes into $OUT: run.log, tp2.csv, tp1.csv, allreduce.csv (main) or extra_*.csv (extra), and p/*.jsonl
# (rows appended as measured, so a killed run keeps what it finished).
set -o pipefail
: "${OUT:?set OUT}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
M="python3 -m dse.validation.measure_tp"
LOG="$OUT/run.log"
mkdir -p "$OUT/p"
what="${1:-main}"
{
  date -u; nvidia-smi; nvidia-smi topo -m; nvidia-smi nvlink -s
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'nccl', torch.cuda.nccl.version(), 'gpus', torch.cuda.device_count())"
  python3 -m pip show nvidia-ml-py 2>/dev/null | head -2
} >>"$LOG" 2>&1
if [ "$what" = main ]; then
  # smoke test: small model, both degrees, NCCL init log; stop here if it fails
  NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT $M --model llama-3.2-1b --tp 2 1 --batch 1 --in-len 64 --out-len 16 \
    --heat-s 0 --min-decode-s 0.2 --min-prefill-s 0.1 --nccl-timeout-s 60 --out /tmp/smoke.csv \
    --partial-dir /tmp/smoke 2>&1 | tee -a "$LOG" || exit 1
  $M --model llama-3-8b llama-3-70b llama-2-13b --tp 2 --batch 1 8 32 64 --in-len 512 --out-len 128 \
    --allreduce-out "$OUT/allreduce.csv" --allreduce-min-bytes 1024 --heat-s 20 --deadline-s 230 \
    --out "$OUT/tp2.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
  $M --model llama-3-8b llama-2-13b --tp 1 --batch 1 8 32 64 --in-len 512 --out-len 128 \
    --heat-s 10 --deadline-s 120 --out "$OUT/tp1.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
elif [ "$what" = extra ]; then
  # 1. diagnostics: the same TP2 steps without collectives (compute alone)
  $M --model llama-3-8b llama-3-70b --tp 2 --batch 1 8 64 --in-len 512 --out-len 128 --comm none \
    --heat-s 20 --deadline-s 90 --no-self-check --out "$OUT/extra_nocomm.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
  # 2. two more models, TP2 and TP1
  $M --model mistral-7b llama-3.2-1b --tp 2 1 --batch 1 8 32 64 --in-len 512 --out-len 128 \
    --heat-s 5 --deadline-s 70 --no-self-check --out "$OUT/extra_models.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
  # 3. long prompts (llama-3-70b is skipped at TP1: it does not fit one GPU)
  $M --model llama-3-8b llama-3-70b --tp 2 1 --batch 1 8 --in-len 4096 --out-len 128 \
    --heat-s 5 --deadline-s 60 --no-self-check --out "$OUT/extra_long.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
  # 4. repeat of four main-run cases (run-to-run spread)
  $M --model llama-3-8b llama-3-70b --tp 2 --batch 1 64 --in-len 512 --out-len 128 \
    --heat-s 0 --deadline-s 50 --no-self-check --out "$OUT/extra_repeat.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
elif [ "$what" = big1 ]; then
  # llama-3-70b on ONE GPU (141 GB of weights in 150 GB) at small batches, and TP2 at batch 16 to pair
  $M --model llama-3-70b --tp 1 --batch 1 8 16 --in-len 512 --out-len 128 --max-prefill-tokens 4096 \
    --mem-margin-gb 1.5 --heat-s 15 --deadline-s 100 --out "$OUT/big_tp1.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
  $M --model llama-3-70b --tp 2 --batch 16 --in-len 512 --out-len 128 --max-prefill-tokens 4096 \
    --heat-s 0 --deadline-s 30 --no-self-check --out "$OUT/big_tp2.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
elif [ "$what" = heldout ]; then
  # held-out set (validation/measurements_tp_h200_heldout.csv): prompts, batches, out_len and one model card
  # (llama-2-7b, MHA) not in measurements_tp_h200.csv; TP2 then TP1 in each group; never a fit target.
  # 1. prompt 2048, batch 2 and 16 (self-check on; stop if nothing could be measured)
  $M --model llama-3-8b llama-2-7b --tp 2 1 --batch 2 16 --in-len 2048 --out-len 256 \
    --heat-s 15 --deadline-s 75 --out "$OUT/heldout_p2048.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG" || exit 1
  # 2. prompt 8192, batch 4 and 16 (llama-2-7b is trained to 4096 positions: not at 8192)
  $M --model llama-3-8b llama-3.2-1b --tp 2 1 --batch 4 16 --in-len 8192 --out-len 256 \
    --heat-s 0 --deadline-s 75 --no-self-check --out "$OUT/heldout_p8192.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
  # 3. batch 128 at prompt 1024
  $M --model llama-3-8b llama-2-7b --tp 2 1 --batch 128 --in-len 1024 --out-len 256 \
    --heat-s 0 --deadline-s 45 --no-self-check --out "$OUT/heldout_b128.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
  # 4. llama-3-70b at TP2 only (one GPU holds its weights only at small batch and short prompt)
  $M --model llama-3-70b --tp 2 --batch 4 --in-len 2048 --out-len 256 --max-prefill-tokens 4096 \
    --heat-s 0 --deadline-s 30 --no-self-check --out "$OUT/heldout_70b.csv" --partial-dir "$OUT/p" 2>&1 | tee -a "$LOG"
fi
date -u >>"$LOG"
