# On the device machine, one call (~60-90 s; $1 = budget in seconds, default 90): issue 13's
# attention-only floors and kernel curves.
#   bash benchmarks/gpu_attn.sh 90
# Writes under $OUT/attn/, named after the device (h100, h200):
#   TAG-floor.jsonl          bench_floor.py: CUDA-graph replays of 1-64 one-store kernels at 1 to 16
#                            programs per SM (the replay's fixed cost graph_launch_s, the per-kernel
#                            floor by grid), and the rotate-on-load decode kernel against plain decode
#                            at 8 shapes of 2 MB-1 GB (the rope_attention curve)
#   TAG-kernels-small.jsonl  bench_kernels.py --dense-only: the dense split-K kernel below 16 MB
#                            (batch 1-2 x 512-4096 rows), the small end of the attention curve
#   TAG-profile-small.json   (if time is left) torch.profiler kernel tables, step and attention alone,
#                            H2O, ALISA, SparQ, Quest, StreamingLLM at 4k x 8 and 16k x 1 (llama-3.1-8b, 8 layers)
# and prints, last, the fits with their profile lines.
. benchmarks/gpu_setup.sh
budget=${1:-90}
tag=$(python3 -m kvsim.runtime.environment)
mkdir -p $OUT/attn
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
quiet() { grep -v -i warn | tail -${TAIL:-3}; }

echo "== floor"
timeout $(( $(left) / 2 )) python3 benchmarks/bench_floor.py --out $OUT/attn/$tag-floor.jsonl 2>&1 | quiet
echo "== small dense kernels"
timeout $(( $(left) * 2 / 3 )) python3 benchmarks/bench_kernels.py --dense-only --batches 1,2 --seqs 512,1024,2048,4096 \
  --out $OUT/attn/$tag-kernels-small.jsonl 2>&1 | quiet
if [ $(left) -gt 25 ]; then
  echo "== kernel tables"
  TAIL=10 timeout $(( $(left) - 10 )) python3 benchmarks/profile_steps.py --out $OUT/attn/$tag-profile-small.json \
    --methods h2o,alisa,sparq,quest,streamingllm --configs 4096x8,16384x1 2>&1 | grep attention | quiet
fi
echo "== summary ($tag, $(( $(date +%s) - start )) s)"
python3 benchmarks/bench_floor.py --fit $OUT/attn/$tag-floor.jsonl --hw $tag
python3 benchmarks/bench_kernels.py --fit benchmarks/results/$tag-kernels.jsonl $OUT/attn/$tag-kernels-small.jsonl \
  --hw $tag --launch benchmarks/results/$tag-launch.jsonl
