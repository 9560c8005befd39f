"""The reserve beyond peak of the max-batch runs against the holes the runtime's weight draws
leave in torch's caching allocator (kvsim.runtime.allocator_holes; issue 12):

    python3 benchmarks/allocator_holes.py
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvsim.runtime.allocator_holes import weight_holes  # noqa: E402

# peak reserved less peak allocated at the largest batch that ran, benchmarks/results/h*-memory.jsonl
MEASURED_GB = {"llama-2-13b": "5.05 / 5.18", "llama-2-7b": "2.59 / 2.52", "llama-3.1-8b": "0.94-1.61"}

if __name__ == "__main__":
    print(f"{'model':<14} {'holes (model)':>14} {'measured reserve H100 / H200':>30}")
    for model, measured in MEASURED_GB.items():
        print(f"{model:<14} {weight_holes(model) / 1e9:11.2f} GB {measured:>27} GB")
