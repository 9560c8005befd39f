"""StreamingLLM: attention sinks + a recent window (Xiao et al., ICLR'24, arXiv 2309.17453;
code mit-han-lab/streaming-llm).

The cache keeps the first ``sink`` tokens and the ``recent`` newest (``StartRecentKVCache`` in
streaming_llm/kv_cache.py). One decode step, per layer and KV head, context S (= ``wl.seq``, the
new token included), C = min(sink + recent, S − 1) cached past tokens:
  attention over C + 1 rows: read 2·(C+1)·d·b, FLOPs G·(C+1)·(4d+5)
  re-rotation (RoPE models): keys are cached before RoPE and rotated to their position *in the
      cache* every step (pos_shift/modify_llama.py: ``apply_rotary_pos_emb_single(key_states,
      ..., arange(kv_seq_len))``), x·cos + rotate_half(x)·sin: 3 FLOPs per element, 3·C·d per KV
      head. The reference materializes the rotated keys (one more read of the C keys,
      and a write); kvsim charges the kernel that rotates each key as attention loads it
      (kernels/decode.py ``rope_decode_attention``, measured on the H100): no extra K traffic,
      only the C slot positions (4 B each) and their cos/sin rows (d·b_a) once per layer, and
      the rotation FLOPs, all folded into the attention op, timed on the rotating kernel's own
      measured curve (``memory.kernel_efficiency.rope_attention``, benchmarks/bench_floor.py;
      it runs slower than plain decode at equal bytes). The new key's own rotation stays in
      ``layers/attn/rope``. Models with learned absolute positions (OPT) need no re-rotation.
Eviction drops a slice (a ring buffer in a real kernel): no extra traffic beyond ``kv_append``.
GQA: the window is positional, identical for every head, so KV heads need nothing special.

Defaults: sink 4 and recent 2000 from examples/run_streaming_llama.py (``--start_size 4
--recent_size 2000``). The reference trims the cache to sink + recent after each token
(eval_long_ppl.py), so the next token attends to sink + recent + 1 rows, C + 1.
A window of S or more is not an error: attention then equals dense (plus the re-rotation).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...cost import Op, Resident
from ..attention import contiguous_target, decode_attention, full_kv_bytes
from ..base import Method, prompt_layer_bytes
from .spec import StreamingLLMSpec

ROTATE_FLOPS = 3.0  # x·cos + rotate_half(x)·sin per element
POSITION_BYTES = 4.0  # int32 cache position of a slot
SLOT_BYTES = 8.0  # int64 absolute position held by each slot (kvsim/methods/streamingllm/runtime.py)
SLOT_ALIGN = 16  # the cache's rows are allocated in multiples of 16 (runtime/cache.py)


class StreamingLLM(StreamingLLMSpec, Method):

    rotates_new_keys = False  # the new key is cached before RoPE

    def rope_positions(self, wl):
        """Keys are rotated to their position in the cache: the window and the new token."""
        return self.cached_tokens(wl.seq) + 1.0

    def prefill_scratch(self, model, wl):
        """The reference feeds its input token by token and trims the cache after each
        (eval_long_ppl.py): no more than the window's pre-RoPE keys and values of one layer."""
        return 2 * prompt_layer_bytes(model, wl.with_(seq=np.minimum(wl.seq, self.rope_positions(wl))))

    def slot_positions(self, model, wl) -> list[Op]:
        """Each slot's rotary position, once per step for every layer (runtime begin_step): six
        elementwise kernels over the slots' int64 positions, ``slot < sink``, ``sink + slot``,
        ``− start``, the select, the clamp and the int32 cast: read 8+8+8+17+8+8, write
        1+8+8+8+8+4 bytes a slot."""
        if model.learned_positions:
            return []
        slots = np.ceil((self.cached_tokens(wl.seq) + 1.0) / SLOT_ALIGN) * SLOT_ALIGN
        return [Op("attn/slot_positions", "attention", hbm_read=57.0 * slots, hbm_write=37.0 * slots,
                   launches=6.0, dtype="fp32").issued(torch=6)]

    def cache_ops(self, model, wl) -> list[Op]:
        """The new token's K/V, and its absolute position written into its slot (one fill)."""
        fill = Op("cache/slot_position", "cache", hbm_write=SLOT_BYTES, dtype="fp32").issued(torch=1, torch_host=1)
        return [fill, *super().cache_ops(model, wl)]

    def attention_ops(self, model, wl) -> list[Op]:
        cached = self.cached_tokens(wl.seq)
        ops = decode_attention("layers/attn/decode", model, wl, rows=cached + 1.0, layers=model.n_layers,
                               target=contiguous_target(wl),
                               kernel=None if model.learned_positions else "rope")
        if model.learned_positions:
            return ops
        heads = wl.batch * model.n_kv_heads
        main = ops[0]
        rotate_flops = heads * cached * model.head_dim * ROTATE_FLOPS * model.n_layers
        tables = cached * (POSITION_BYTES + model.head_dim * wl.b_a) * model.n_layers
        # host: the cos and sin halves (two views)
        ops[0] = replace(main, flops=main.flops + rotate_flops, hbm_read=main.hbm_read + tables,
                         torch_host_calls=main.torch_host_calls + 2 * model.n_layers,
                         curve="rope_attention")  # the rotating kernel's own measured curve
        return [*self.slot_positions(model, wl), *ops]

    def kv_resident(self, model, wl) -> list[Resident]:
        rows = self.cached_tokens(wl.seq) + 1.0  # the window plus the new token's slot
        return [Resident("kv_cache", gpu=full_kv_bytes(model, wl, rows=rows), kv=True)]
