#!/usr/bin/env bash
# The layer-12 architecture table of docs/guides/sae_bench.md: TopK, BatchTopK and Matryoshka BatchTopK
# trained on the same cached activations (equal tokens, equal k = 48, 4,608 latents), then sae bench on
# them and the bundled SAE. Usage: bash benchmarks/results/arch_table.sh OUT_DIR [TOKENS] (about 45 min).
set -euo pipefail
OUT=${1:?usage: arch_table.sh OUT_DIR [TOKENS]}
TOKENS=${2:-3000000}
S=${SAESCOPE:-.venv/bin/saescope}
HOOK=blocks.12.hook_resid_post
mkdir -p "$OUT"
$S activations cache --hook $HOOK --tokens 1000000 --out "$OUT/cache"
common=(--hook $HOOK --features 4608 --k 48 --tokens "$TOKENS" --activations "$OUT/cache/$HOOK" --seed 0)
$S sae train "${common[@]}" --activation topk --out "$OUT/topk"
$S sae train "${common[@]}" --activation batchtopk --out "$OUT/batchtopk"
$S sae train "${common[@]}" --activation batchtopk --matryoshka 144,288,576,1152,2304,4608 --out "$OUT/matryoshka"
$S sae bench default "$OUT/topk" "$OUT/batchtopk" "$OUT/matryoshka" \
  --evals core,sparse_probing,scr,tpp,absorption,meta_structure --tokens 50000 --out "$OUT/bench"
