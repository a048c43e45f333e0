#!/usr/bin/env bash
# The README's GPU figures in one run (about 7 minutes on one H200), from the repository
# root of a machine whose python3 has torch, transformers, h5py and nnsight:
#
#     OUT=results bash benchmarks/gpu.sh
#
# 1. the extraction benchmark on LLaVA-1.5-7B's shapes (random weights, float16), files
#    in /dev/shm (what the toolkit costs, not the disk), against the forward pass and the
#    raw write of the same bytes; 2. the host write and read paths alone at those shapes
#    (benchmarks/write_path.py); 3. the built-in and the wide tiny models on the GPU;
#    4. data-parallel scaling with CPU ranks (torchrun, gloo).
set -euo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VLM_INTERP_HOME=${VLM_INTERP_HOME:-/tmp/vlm-interp-home}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/machine.txt"
python3 -c "import torch, transformers, nnsight, h5py; print('torch', torch.__version__,
'transformers', transformers.__version__, 'nnsight', nnsight.__version__, 'h5py',
h5py.__version__, 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/machine.txt"
FOLDER=/dev/shm  # in memory, if it holds the ~25 GB the methods write; else the disk
if [ "$(df --output=avail -BG /dev/shm | tail -1 | tr -dc 0-9)" -lt 30 ]; then FOLDER=/tmp; fi
df -h "$FOLDER" | tee -a "$OUT/machine.txt"
python3 benchmarks/extraction.py --models llava7b --device-map cuda --dtype float16 \
    --n-images 32 --batch-size 16 --repeats 2 --folder "$FOLDER" 2>&1 | tee "$OUT/llava7b.txt"
python3 benchmarks/write_path.py --folders "$FOLDER" --images 32 --batch-size 16 --repeats 3 \
    2>&1 | tee "$OUT/write_path.txt"
python3 benchmarks/extraction.py --models organism wide --device-map cuda --n-images 512 \
    --batch-size 64 --repeats 3 --memory-images 128 512 2>&1 | tee "$OUT/tiny.txt"
python3 benchmarks/ranks.py --ranks 1 2 4 8 --n-images 512 --batch-size 16 --threads 16 \
    2>&1 | tee "$OUT/ranks.txt"
