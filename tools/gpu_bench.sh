#!/bin/bash
# Ours and the peers, same card, one machine: run on the GPU machine from the repository root.
#   tools/gpu_bench.sh ours|peers|all [OUT_DIR]
# Needs the carried folder carry/ (gitignored): carry/mtwheels (shared/peers/get_maxtext_wheels.sh) and
# carry/peers (a copy of shared/peers). Appends every result to $OUT_DIR/benchmarks.jsonl.
set -uo pipefail
what=${1:-all}; out=${2:-${OUT:-/tmp/bench}}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -m pip install -q --no-index --no-deps --target /tmp/site carry/mtwheels/ml_collections-*.whl 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
J="$out/benchmarks.jsonl"
ours() { python3 -m xfer_jax.cli bench --jsonl "$J" "$@" 2>&1 | grep -v "^{"; }
if [[ $what == ours || $what == all ]]; then
  python3 tools/check_attention.py --impl cudnn
  ours --shape tinyllama_1b --batch_size 8 --attention cudnn --no_scan
  ours --shape llama2_7b_l8 --batch_size 4 --attention cudnn --no_scan
fi
if [[ $what == peers || $what == all ]]; then
  for shape_batch in "tinyllama_1b 8" "llama2_7b_l8 4"; do
    for mode in eager compile; do python3 carry/peers/torch_bench.py $shape_batch $mode | tee -a "$J"; done
    bash carry/peers/maxtext_bench.sh carry/mtwheels $shape_batch | tee -a "$J"
  done
fi
python3 tools/bench_table.py "$J"
