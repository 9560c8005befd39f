# On a device machine with 4 GPUs of one host (after benchmarks/fetch_device_wheels.sh here): the
# all-reduce microbenchmark and the tensor-parallel decode-step sweep at 2 and 4 GPUs, written
# under $OUT, then kvsim's error on them. Fits one 10-minute call with the defaults.
# Usage: bash benchmarks/gpu_tp.sh [SWEEP_S per GPU count (default 150)]
. benchmarks/gpu_setup.sh
# NVLink multicast off here too (each script also sets it before its process group starts)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
sweep_s=${1:-150}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -o -i -E '[ha][0-9]{3}' | head -1 | tr 'A-Z' 'a-z')
gpu=${gpu:-gpu}
nvidia-smi topo -m | tee $OUT/$gpu-topo.txt
python3 -c "import torch; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version(), 'gpus', torch.cuda.device_count())"
for n in 2 4; do
  timeout 150 python3 benchmarks/bench_allreduce.py --gpus $n --out $OUT/$gpu-allreduce.jsonl 2>&1 | grep -v -i warn | tail -12
done
# the all-reduce graphs replayed (then eager calls followed on the same communicator): the TP
# steps can be timed as graph replays too; else eager only
graphs=""
grep -q '"graph_s": [0-9]' $OUT/$gpu-allreduce.jsonl 2>/dev/null || { graphs="--no-graphs"; echo "no all-reduce graph replays: TP steps timed eager"; }
for n in 2 4; do
  timeout $((sweep_s + 90)) python3 benchmarks/measure_tp.py --gpus $n --budget-s $sweep_s $graphs \
    --out $OUT/$gpu-tp.jsonl 2>&1 | grep -v -i warn | tail -40
done
python3 -m kvsim validate $OUT/$gpu-tp.jsonl
wc -l $OUT/*.jsonl
