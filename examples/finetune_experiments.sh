#!/usr/bin/env bash
# Both fine-tuning experiments side by side (README "Fine-tuning experiments"), from the
# repository root of a machine whose python3 has the toolkit's dependencies:
#
#     OUT=results DEVICE=cuda STEPS=2000 bash examples/finetune_experiments.sh
#
# DEVICE (cpu or cuda) runs the fine-tuning, extraction and probes; STEPS is each model's
# fine-tuning steps (default 300, the CPU run's); THREADS the torch threads of each of the
# two processes; ARGS more options for both (e.g. "--n-images 50 --sites vision.3" for a
# quick check). Each experiment writes its tables, figures, pictures and models under
# OUT/<experiment>, and its log to OUT/<experiment>.log.
set -euo pipefail
OUT=${OUT:-experiments}
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${THREADS:-$(( ($(nproc) + 1) / 2 ))}
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', 'cpus', __import__('os').cpu_count())" \
    | tee "$OUT/machine.txt"
pids=()
for experiment in encoder complexity; do
    (
        start=$SECONDS
        python3 -m interp experiment "$experiment" --out "$OUT/$experiment" --device-map "$DEVICE" \
            --steps "$STEPS" ${ARGS:-} > "$OUT/$experiment.log" 2>&1
        echo "$experiment: $((SECONDS - start)) s" | tee -a "$OUT/machine.txt"
    ) &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
