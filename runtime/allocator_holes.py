"""Why the reference runtime's allocator holds more beyond its peak for some models (issue 12).

    python3 benchmarks/allocator_holes.py

The max-batch runs (benchmarks/results/h*-memory.jsonl) reserve, beyond their peak allocation,
an amount that depends on the model and not on the batch, context or device: llama-2-13b
5.05 / 5.18 GB (H100 batch 7 / H200 batch 16), llama-2-7b 2.59 / 2.52 GB, llama-3.1-8b
0.94-1.61 GB. runtime/model.py draws every weight as an fp32 tensor, scales it into a second
fp32 tensor and casts it: two fp32 temporaries around each bf16 weight. This replays that
sequence through a model of torch's CUDA caching allocator (large pool: sizes rounded to 512 B,
a segment of its own rounded to 2 MiB above 10 MiB, else a 20 MiB one; best fit; a block split
when more than 1 MiB remains; free neighbours merged within a segment; empty_cache releases only
whole free segments) and prints the free bytes left inside segments that hold weights: no later
allocation larger than a hole can use them, so they stay reserved at the peak.
"""
from __future__ import annotations

from kvsim.models import load_model

MIB = 1 << 20


def segment_bytes(size: int) -> int:
    if size <= MIB:
        return 2 * MIB
    return 20 * MIB if size < 10 * MIB else -(-size // (2 * MIB)) * (2 * MIB)


class CachingAllocator:
    """Segments as lists of [size, owner] blocks (owner None: free)."""

    def __init__(self):
        self.segments, self.count = [], 0

    def alloc(self, size: int) -> int:
        size = -(-size // 512) * 512
        free = [(block[0], s, b) for s, seg in enumerate(self.segments) for b, block in enumerate(seg)
                if block[1] is None and block[0] >= size]
        if free:
            _, s, b = min(free)
        else:
            self.segments.append([[segment_bytes(size), None]])
            s, b = len(self.segments) - 1, 0
        self.count += 1
        block = self.segments[s][b]
        rest = block[0] - size
        self.segments[s][b:b + 1] = [[size, self.count], [rest, None]] if rest > MIB else [[block[0], self.count]]
        return self.count

    def free(self, owner: int) -> None:
        for seg in self.segments:
            for block in seg:
                if block[1] == owner:
                    block[1] = None
            merged = []
            for block in seg:
                if merged and merged[-1][1] is None and block[1] is None:
                    merged[-1][0] += block[0]
                else:
                    merged.append(block)
            seg[:] = merged

    def empty_cache(self) -> None:
        self.segments = [seg for seg in self.segments if any(block[1] is not None for block in seg)]

    def holes(self) -> int:
        return sum(block[0] for seg in self.segments for block in seg if block[1] is None)


def draw(alloc: CachingAllocator, numel: int) -> None:
    """runtime/model.py _normal: fp32 draw, fp32 scaled copy, bf16 cast; the fp32 ones freed."""
    drawn, scaled = alloc.alloc(4 * numel), alloc.alloc(4 * numel)
    alloc.alloc(2 * numel)
    alloc.free(scaled)
    alloc.free(drawn)


def weight_holes(name: str) -> int:
    """Free bytes inside weight-holding segments after runtime/model.py builds ``name``'s weights."""
    cfg, alloc = load_model(name), CachingAllocator()
    up = 2 * cfg.ffn_dim if cfg.mlp == "swiglu" else cfg.ffn_dim
    draw(alloc, cfg.vocab * cfg.d_model)
    for _ in range(cfg.n_layers):
        for rows, cols in ((cfg.q_dim + 2 * cfg.kv_dim, cfg.d_model), (cfg.d_model, cfg.q_dim),
                           (up, cfg.d_model), (cfg.d_model, cfg.ffn_dim)):
            draw(alloc, rows * cols)
    if not cfg.tied_embeddings:
        draw(alloc, cfg.vocab * cfg.d_model)
    alloc.empty_cache()
    return alloc.holes()
