"""A whole generation of N tokens for a batch, following a kvsim schedule on an emulated GPU.

    pred = kvsim.schedule.executed.prediction("h100", "opt-6.7b", 4, 32, 128, 512, gpu_mem)
    run = generate("alisa", pred, device="cuda")   # or "flexgen", or "dense" (everything on the GPU)
    run["steps"]  # per step: phase, latency_s, recompute_s, h2d/d2h bytes, peak_bytes

Policies:
  alisa    ALISA's sparse attention (kvsim/methods/alisa/runtime.py) over the plan's placement
           (runtime/schedule_placement.py, runtime/schedule_store.py): Phase II rows in pinned host memory, gathered by the GPU
           when selected; Phase III rows deleted and recomputed from their kept layer inputs.
  flexgen  dense attention with the oldest share 1 − cg of every layer's KV in pinned host memory,
           the whole host block streamed to the GPU every step, prefetched one layer ahead
           (runtime/offload.py), cg from kvsim's FlexGen-style LP (K/V over PCIe).
  dense    dense attention, every row on the GPU (the reference the others must reproduce).
Prefill runs the prompt through the decoder (causal attention by torch's SDPA), so every K/V row
and kept x is what the model computes, and a recomputed row can be checked against the original.
Both plans must keep every weight on the GPU (weights_gpu = 1): the weight stream is not run.
"""
from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

from kvsim.schedule.executed import phase_of

from .cache import CacheSpec, KVCache
from .launches import host_probe
from .model import Decoder, torch_dtype
from .registry import METHODS, resolve
from .schedule_placement import GPU, HOST, TokenPlacement
from .schedule_store import PlannedRows, arena_rows, mark, span_s
from .synthetic import synthetic_scores
from .transfers import PcieCounter

POLICIES = ("alisa", "flexgen", "dense")
PROBE_EVERY = 32  # decode steps between host-clock probes (eager steps scale with the host clock)


class ScheduleUnsupported(ValueError):
    """A plan the executor cannot run (it streams weights)."""


class PlannedKV(KVCache):
    """KVCache whose layers are PlannedRows (every read goes through attend_indices), their
    arenas one tensor [L, pieces·B·d] (runtime/schedule_placement.py), so that a step's row
    moves are one copy per table for every layer (``compact``)."""

    def __init__(self, spec: CacheSpec, place: TokenPlacement, counter, model, rotary):
        self.spec, self.rows, self.int8, self._lens, self._captured = spec, place.cap["kv"], False, {}, {}
        self.arena = torch.zeros(spec.n_layers, place.pieces * spec.batch * spec.head_dim, dtype=spec.dtype,
                                 device=spec.device)
        self.table_rows = {t: arena_rows(self.arena, place, t) for t in ("kv", "x")}  # [L, cap, row] each
        self.layers = [PlannedRows(i, place, self.arena[i], spec.batch, spec.n_kv_heads, spec.head_dim, counter,
                                   model, rotary) for i in range(spec.n_layers)]

    def compact(self, moves: dict) -> None:
        """The step's arena row moves (TokenPlacement._compact), after every layer's evictions
        read their rows: per table, one gather of the moving rows of every layer (a temporary of
        L·m rows, m ≤ the rows that left) and one copy into the freed slots."""
        for t, slots in moves["compact"].items():
            if slots is not None:
                dst, src = slots
                rows = self.table_rows[t]
                rows.index_copy_(1, dst, rows.index_select(1, src))


class ScheduledALISA(METHODS["alisa"]):
    """ALISA whose cache follows the plan; selections for every layer are made at the start of
    a step (they depend only on the scores after the previous step), sorted, so the deleted
    rows among them come first; their recomputation is sized from the plan's counts (no host
    sync in a step: ``recompute_bound``)."""

    def __init__(self, spec, params, rotary, counter, place: TokenPlacement, model):
        self.place, self.model = place, model
        super().__init__(spec, params, rotary, counter)

    def allocate(self) -> None:
        s = self.spec
        self.kv = PlannedKV(s, self.place, self.counter, self.model, self.rotary)
        self.acc = [torch.zeros(s.batch, s.max_seq, dtype=torch.float32, device=s.device) for _ in range(s.n_layers)]

    def prefill_rows(self, layer: int, moves: dict, k, v, x, seqs: slice) -> None:
        """The prompt's rows of the sequences ``seqs`` (a prefill pass) per the plan's moves."""
        self.kv.layers[layer].apply(moves, {"k": k, "v": v}, x, seqs)
        self.acc[layer][seqs, : k.shape[2]] = synthetic_scores(k, self.spec.group, seed=layer, sum_heads=True,
                                                              seqs=seqs, batch=self.spec.batch)

    def begin_step(self, tokens) -> None:
        n = self.n + 1
        moves = self.place.advance(n - self.place.p["n"][0])
        for store in self.kv.layers:
            store.apply(moves)
        self.kv.compact(moves)
        k = self.window(n)
        local = torch.arange(n - k, n, device=self.spec.device).expand(self.spec.batch, k)
        self._sel = [torch.cat([super(ScheduledALISA, self).select(layer, n)[:, :-k].sort(-1).values, local], -1)
                     for layer in range(self.spec.n_layers)]
        R = self.recompute_bound(self._sel[0].shape[1] - k)
        for store, sel in zip(self.kv.layers, self._sel):
            store.recompute_rows = sel[:, :R] if R > 0 else None
        self._prefetch(0)

    def _prefetch(self, layer: int) -> None:
        """Layer's selected rows start moving (PlannedRows.prefetch_rows): layer 0's at the
        step's start, each later one's when the layer before it selects, so at most two
        layers' rows are in flight (the schedule's 2-layer load buffer)."""
        if layer < self.spec.n_layers:
            sel = self._sel[layer]
            rows = sel[:, None, :].expand(sel.shape[0], self.spec.n_kv_heads, sel.shape[1]).int()
            self.kv.layers[layer].prefetch_rows(rows)

    def recompute_bound(self, selected: int) -> int:
        """List entries to recompute per layer, from host-known counts (no host sync): of the
        ``selected`` earlier positions, sorted, the deleted ones come first and there are at most
        min(selected, deleted) of them; the rest of the R entries are masked (``_recompute``)."""
        return min(selected, self.place.deleted)

    def select(self, layer: int, n: int) -> torch.Tensor:
        self._prefetch(layer + 1)
        return self._sel[layer]

    def layer_input(self, layer: int, x: torch.Tensor) -> None:
        self.kv.layers[layer].put_input(self.n, x[:, 0])


def _method(policy: str, pred: dict, decoder: Decoder, batch, max_seq, device, dtype, counter):
    cfg = decoder.cfg
    plan = pred["alisa"] if policy == "alisa" else pred["flexgen"]
    if policy != "dense" and plan["weights_gpu"] < 1 - 1e-6:
        raise ScheduleUnsupported(f"{policy}: the plan streams {100 * (1 - plan['weights_gpu']):.1f}% of the "
                                  "weights over PCIe, which the executor does not run (raise --gpu-mem)")
    offload = 1.0 - plan["kv_gpu"] if policy == "flexgen" else 0.0
    spec = CacheSpec(decoder.n_layers, batch, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, max_seq, device,
                     dtype, "same", offload if offload > 1e-6 else 0.0)
    if policy == "alisa":
        _, params = resolve("alisa", pred["params"], cfg, max_seq)
        place = TokenPlacement(plan["tokens"], device, 2 * cfg.n_kv_heads, cfg.d_model // cfg.head_dim)
        return ScheduledALISA(spec, params, decoder.rotary, counter, place, decoder)
    return METHODS["dense"](spec, {}, decoder.rotary, counter)


def _forward(decoder: Decoder, tokens, positions, attend, layer_input=None) -> torch.Tensor:
    """Decoder.forward, handing each layer's input x [B, T, D] to ``layer_input(layer, x)``."""
    x = decoder.embed_tokens(tokens, positions)
    for i in range(decoder.n_layers):
        if layer_input is not None:
            layer_input(i, x)
        x = decoder.layer(i, x, attend)
    return decoder.logits(x[:, -1])


def decode_step(decoder: Decoder, method, tokens: torch.Tensor) -> torch.Tensor:
    """One timed decode step: the method's staging (ALISA's selections for every layer, the
    placement's moves), the decoder over the new tokens [B], the method's step end; the logits."""
    method.begin_step(tokens)
    pos = torch.full((tokens.shape[0], 1), method.n, dtype=torch.long, device=tokens.device)
    logits = _forward(decoder, tokens[:, None], pos, method.attend, getattr(method, "layer_input", None))
    method.end_step()
    return logits


def _prefill(decoder: Decoder, method, tokens: torch.Tensor, sequences: int) -> torch.Tensor:
    """The prompt through every layer with causal attention, in passes of ``sequences`` of the
    batch (the GPU pools are allocated for the whole run first; kvsim.schedule.executed
    .sequences_per_pass sizes a pass to fit beside them); K/V (after RoPE) and the kept layer
    inputs go to the method's cache per its plan. The passes' logits [B, V]."""
    B, P = tokens.shape
    moves = method.place.advance(0) if isinstance(method, ScheduledALISA) else None
    logits = [_prefill_pass(decoder, method, tokens, moves, slice(b, min(b + sequences, B)))
              for b in range(0, B, sequences)]
    method.finish_prefill(P)
    return torch.cat(logits)


def _prefill_pass(decoder: Decoder, method, tokens: torch.Tensor, moves, seqs: slice) -> torch.Tensor:
    """The sequences ``seqs`` of the prompt through every layer; their logits [b, V]."""
    tokens = tokens[seqs]
    (b, P), inputs = tokens.shape, {}
    positions = torch.arange(P, device=tokens.device).expand(b, P)

    def attend(layer, q, k, v):
        pos = torch.arange(P, device=q.device)[None, :, None]
        q, k = decoder.rotary(q, pos), decoder.rotary(k, pos)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [b, heads, P, d]
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])
        if moves is not None:
            method.prefill_rows(layer, moves, k, v, inputs.pop(layer), seqs)
        else:
            method.store_prefill(layer, k.contiguous(), v.contiguous(), seqs)
        return o.transpose(1, 2)

    return _forward(decoder, tokens, positions, attend, inputs.__setitem__ if moves is not None else None)


class _Clock:
    """Step latency: CUDA events on the GPU (eager), wall time on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self):
        return mark(self.device)

    def stop(self, begun) -> float:
        end = mark(self.device)
        if self.device.type == "cuda":
            end.synchronize()
        return span_s(begun, end)


def _memory(device, decoder, method) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return decoder.weight_bytes + method.device_bytes


@torch.no_grad()
def generate(policy: str, pred: dict, device=None, dtype=None, seed: int = 0, decoder: Decoder | None = None,
             max_steps: int | None = None, keep_logits: bool = False, step_hook=None,
             prefill_sequences: int | None = None) -> dict:
    """Prefill ``pred``'s prompt and generate its ``gen`` tokens greedily under ``policy``
    (``max_steps``: stop after that many decode steps, e.g. to warm up kernels). The prefill
    runs in passes of ``prefill_sequences`` (default: the plan's, so a pass fits beside the GPU
    pools; the whole batch for ``dense``). Returns the
    step records, the generated tokens [B, steps] (on the CPU) and, with ``keep_logits``, every
    step's logits [B, steps, V] (on the CPU: B·V·4 B a step would otherwise stay on the GPU).
    ``step_hook(j)``, if given, runs after step j's timing (benchmarks/profile_schedule.py)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch_dtype(dtype or ("bf16" if device.type == "cuda" else "fp32"))
    B, P, G = pred["batch"], pred["prompt"], pred["gen"]
    decoder = decoder or Decoder(pred["model"], pred["n_layers"], device, dtype, seed, max_positions=P + G)
    counter, clock = PcieCounter(), _Clock(device)
    method = _method(policy, pred, decoder, B, P + G, device, dtype, counter)
    sequences = prefill_sequences or (B if policy == "dense" else pred[policy]["prefill_sequences"])
    tokens = torch.randint(decoder.cfg.vocab, (B, P), generator=torch.Generator().manual_seed(seed + 2)).to(device)
    steps, out, probes, scratch = [], [], [], torch.zeros(1, device=device)
    for j in range(min(G, G if max_steps is None else max_steps) + 1):
        if j % PROBE_EVERY == 1:  # the host clock, untimed, between steps (runtime/launches.py)
            probes.append(host_probe(device, scratch))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before, begun = counter.as_dict(), clock.start()
        logits = _prefill(decoder, method, tokens, sequences) if j == 0 else decode_step(decoder, method, tokens)
        latency = clock.stop(begun)
        after = counter.as_dict()
        tokens = logits.argmax(-1)
        out.append(logits.cpu() if keep_logits else tokens.cpu())
        steps.append(_step_record(j, pred, policy, latency, before, after, _memory(device, decoder, method), method))
        if step_hook is not None:
            step_hook(j)
    key = "logits" if keep_logits else "tokens"
    return {"steps": steps, key: torch.stack(out, 1), "method": method, "decoder": decoder,
            "host_probe_s": statistics.median(probes) if probes else None, "prefill_sequences": sequences}


def _step_record(j, pred, policy, latency, before, after, peak, method) -> dict:
    plan = pred["alisa"]
    phase = phase_of(j, plan["p1"], plan["p2"], plan["alpha"], plan["beta"]) if policy == "alisa" else (
        "prefill" if j == 0 else "static")
    record = {"step": j, "phase": phase, "latency_s": latency, "peak_bytes": peak,
              "h2d": after["h2d"] - before["h2d"], "d2h": after["d2h"] - before["d2h"]}
    if isinstance(method, ScheduledALISA):
        record["recomputed_rows"] = recomputed_rows(method) if j else 0
        record["recompute_s"] = sum(s.take_recompute_s() for s in method.kv.layers)
        record["gpu_rows"], record["host_rows"] = method.place.count(GPU), method.place.count(HOST)
        record["deleted_rows"] = method.place.deleted
    return record


def recomputed_rows(method) -> int:
    """Rows the step recomputed: per layer, the batch times the most deleted rows any sequence
    selected (read after the step: a host sync outside its timing)."""
    deleted, rows = method.place.deleted, [s.recompute_rows for s in method.kv.layers]
    return sum(r.shape[0] * int((r < deleted).sum(-1).max()) for r in rows if r is not None)
