"""Where each position's rows live, step by step, under ALISA's three-phase plan (arXiv
2403.17312 §4.3, Algorithm 2) as kvsim.schedule plans it (kvsim/schedule/executed.py:
``token_plan``'s integer counts): its K/V in the GPU pool, the pinned host pool or deleted, its
kept layer input x on the GPU or the host. The same for every layer, so the index lists a step
needs (evictions, the gather encoding) are built once a step and shared by the layers'
``PlannedRows`` (runtime/schedule_store.py).
"""
from __future__ import annotations

import math

import torch

GPU, HOST, GONE = 1, 2, 3


def _pool(free: int) -> list[int]:
    return list(range(free - 1, -1, -1))  # pop() hands out slot 0 first


def _index(values: list, device, dtype=torch.long) -> torch.Tensor:
    """A host-built index list on ``device``: on CUDA through pinned memory, non_blocking (a
    pageable copy would make the host wait for the GPU's queue)."""
    if torch.device(device).type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype).pin_memory().to(device, non_blocking=True)


def slot_runs(slots: list[int]) -> list[tuple[int, int, int]]:
    """``slots`` as runs of consecutive slots: (first slot, end slot, index of its first row)."""
    runs = []
    for i, s in enumerate(slots):
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0], s + 1, runs[-1][2])
        else:
            runs.append((s, s + 1, i))
    return runs


class TokenPlacement:
    """Positions' places per ``plan`` (token_plan's dict); ``advance(j)`` moves to step j."""

    def __init__(self, plan: dict, device):
        self.p, self.device = plan, torch.device(device)
        self.size = {k: max(1, int(plan[k])) for k in ("gpu_rows", "host_rows", "x_gpu_rows", "x_host_rows")}
        self.free = {k: _pool(v) for k, v in self.size.items()}
        self.off = math.ceil(self.size["host_rows"] / self.size["gpu_rows"]) * self.size["gpu_rows"]
        self.xoff = math.ceil(self.size["x_host_rows"] / self.size["x_gpu_rows"]) * self.size["x_gpu_rows"]
        S = plan["n"][-1]
        self.kv, self.x = {}, {}  # position -> (GPU/HOST/GONE, slot)
        self.enc = torch.full((S,), self.off, dtype=torch.int32, device=self.device)
        self.xenc = torch.full((max(plan["last"], 1),), self.xoff, dtype=torch.int32, device=self.device)
        self.step, self.deleted, self.last = -1, 0, plan["last"]
        self.on_host = 0  # positions whose K/V is in the host pool (host-known: no sync to ask)

    def alpha_share(self, p: int) -> bool:
        s, a = self.p["start"], self.p["alpha"]
        return p >= s and math.floor((p - s + 1) * a + 1e-9) > math.floor((p - s) * a + 1e-9)

    def _take(self, pool: str) -> int:
        if not self.free[pool]:
            raise RuntimeError(f"schedule executor: the {pool} pool ({self.size[pool]} rows) is full")
        return self.free[pool].pop()

    def _place(self, table, pos, where, pools, changed) -> tuple:
        """Put ``pos`` at ``where`` (freeing its old slot); (old, new) places."""
        old = table.get(pos)
        if old is not None and old[0] != GONE:
            self.free[pools[old[0]]].append(old[1])
        new = (where, self._take(pools[where]) if where != GONE else 0)
        if table is self.kv:
            self.on_host += (where == HOST) - (old is not None and old[0] == HOST)
        table[pos] = new
        changed.append(pos)
        return old, new

    def advance(self, j: int) -> dict:
        """Step j's moves: {"kv": [(pos, old, new)], "x": [...]} (old None: a new row)."""
        p, kvp, xp = self.p, {GPU: "gpu_rows", HOST: "host_rows"}, {GPU: "x_gpu_rows", HOST: "x_host_rows"}
        moves, ck, cx = {"kv": [], "x": []}, [], []
        lo_old, lo_del = (0, 0) if j == 0 else (p["old"][j - 1], p["deleted"][j - 1])
        for pos in range(lo_del, p["deleted"][j]):  # deleted first: their slots are free again
            if pos in self.kv or j == 0:
                moves["kv"].append((pos, *self._place(self.kv, pos, GONE, kvp, ck)))
        for pos in range(lo_old, p["old"][j]):  # left the recent window: the α-share goes to CPU
            if j == 0 or not self.alpha_share(pos):
                continue
            if self.kv[pos][0] == GPU:
                moves["kv"].append((pos, *self._place(self.kv, pos, HOST, kvp, ck)))
            if pos < self.last:
                moves["x"].append((pos, *self._place(self.x, pos, HOST, xp, cx)))
        new = range(p["deleted"][0], p["n"][0]) if j == 0 else [p["n"][j] - 1]
        for pos in new:
            host = j == 0 and pos < p["old"][0] and self.alpha_share(pos)
            moves["kv"].append((pos, *self._place(self.kv, pos, HOST if host else GPU, kvp, ck)))
        for pos in (range(min(self.last, p["n"][0])) if j == 0 else [q for q in new if q < self.last]):
            host = j == 0 and pos < p["old"][0] and self.alpha_share(pos)
            moves["x"].append((pos, *self._place(self.x, pos, HOST if host else GPU, xp, cx)))
        self._encode(self.enc, self.kv, ck, self.off)
        self._encode(self.xenc, self.x, cx, self.xoff)
        self.step, self.deleted = j, p["deleted"][j]
        moves["evict"] = {f: self._evictions(moves[f]) for f in ("kv", "x")}  # once for every layer
        return moves

    def _evictions(self, entries):
        """GPU rows leaving for the host this step, the same in every layer: (GPU slots as a device
        index, host slots as runs of consecutive slots), or None."""
        rows = [(old[1], new[1]) for _, old, new in entries if old is not None and old[0] == GPU and new[0] == HOST]
        if any(old is not None and old[0] == GPU and new[0] == GPU for _, old, new in entries):
            raise RuntimeError("schedule executor: a row moves between GPU slots")  # never planned
        if not rows:
            return None
        return _index([a for a, _ in rows], self.device), slot_runs([b for _, b in rows])

    def _encode(self, enc, table, changed, off) -> None:
        if changed:
            code = [table[q][1] if table[q][0] == HOST else off + table[q][1] for q in changed]
            enc[_index(changed, self.device)] = _index(code, self.device, torch.int32)

    def count(self, where: int) -> int:
        return self.on_host if where == HOST else sum(1 for w, _ in self.kv.values() if w == where)
