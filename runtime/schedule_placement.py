"""Where each position's rows live, step by step, under ALISA's three-phase plan (arXiv
2403.17312 §4.3, Algorithm 2) as kvsim.schedule plans it (kvsim/schedule/executed.py:
``token_plan``'s integer counts): its K/V in the GPU arena, the pinned host pool or deleted, its
kept layer input x in the GPU arena or the host. The same for every layer, so the index lists a
step needs (evictions, the arena's row moves, the gather encoding) are built once a step and
shared by the layers' ``PlannedRows`` (runtime/schedule_store.py).

GPU slots: each layer's arena holds ``arena_pieces`` d-wide pieces per sequence (token_plan),
K/V rows (2·Hkv pieces each) dense from its front (slot r at rank r), kept-x rows (D/d pieces
each) dense from its back (slot cap − 1 − r at rank r, cap = the arena's x rows). A row leaving
the GPU (evicted to the host or deleted) frees its rank; once a step's rows have left, the last
rows move into the freed ranks below the new count (``_compact``: one row copy per refilled
rank), before the step's new rows take the next ranks, so the rows in use are always
c_kv·2·Hkv + c_x·D/d pieces a sequence: what kvsim counts at that step.
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


def _offset(host_rows: int, ring: int) -> int:
    """Gather code of GPU slot 0: the first multiple of the ring at or past the host rows
    (kernels/host_gather.py reads code c >= offset at slot c mod ring)."""
    return math.ceil(host_rows / ring) * ring


class TokenPlacement:
    """Positions' places per ``plan`` (token_plan's dict) in arenas of ``kv_pieces`` (2·Hkv) and
    ``x_pieces`` (D/d) pieces per row (module doc); ``advance(j)`` moves to step j."""

    def __init__(self, plan: dict, device, kv_pieces: int, x_pieces: int):
        self.p, self.device = plan, torch.device(device)
        self.row_pieces = {"kv": kv_pieces, "x": x_pieces}
        # pieces per sequence; at least one row of each (a view of no rows has no ring to gather from)
        self.pieces = max(int(plan["arena_pieces"]), kv_pieces, x_pieces)
        self.cap = {t: self.pieces // n for t, n in self.row_pieces.items()}  # each view's rows
        self.size = {"kv": max(1, int(plan["host_rows"])), "x": max(1, int(plan["x_host_rows"]))}
        self.free = {t: _pool(v) for t, v in self.size.items()}  # host slots
        self.dense = {"kv": [], "x": []}  # the position at each GPU rank
        self.freed = {"kv": [], "x": []}  # GPU ranks freed this step, refilled by _compact
        self.off, self.xoff = _offset(self.size["kv"], self.cap["kv"]), _offset(self.size["x"], self.cap["x"])
        S = plan["n"][-1]
        self.kv, self.x = {}, {}  # position -> (GPU/HOST/GONE, slot)
        self.enc = torch.full((S,), self.off, dtype=torch.int32, device=self.device)
        self.xenc = torch.full((max(plan["last"], 1),), self.xoff, dtype=torch.int32, device=self.device)
        self.step, self.deleted, self.last = -1, 0, plan["last"]
        self.on_host = 0  # positions whose K/V is in the host pool (host-known: no sync to ask)

    def alpha_share(self, p: int) -> bool:
        s, a = self.p["start"], self.p["alpha"]
        return p >= s and math.floor((p - s + 1) * a + 1e-9) > math.floor((p - s) * a + 1e-9)

    def _slot(self, t: str, rank: int) -> int:
        """GPU slot of rank ``rank`` in table t (and the rank of slot ``rank``: its own inverse)."""
        return rank if t == "kv" else self.cap["x"] - 1 - rank

    def _take(self, t: str, pos: int, where: int) -> int:
        if where == HOST:
            if not self.free[t]:
                raise RuntimeError(f"schedule executor: the {t} host pool ({self.size[t]} rows) is full")
            return self.free[t].pop()
        self.dense[t].append(pos)
        if sum(len(self.dense[u]) * n for u, n in self.row_pieces.items()) > self.pieces:
            raise RuntimeError(f"schedule executor: the GPU arena ({self.pieces} pieces a sequence) is full")
        return self._slot(t, len(self.dense[t]) - 1)

    def _place(self, t: str, pos: int, where: int, changed: dict) -> tuple:
        """Put ``pos``'s row of table t at ``where`` (freeing its old slot); (old, new) places."""
        table = self.kv if t == "kv" else self.x
        old = table.get(pos)
        if old is not None and old[0] == HOST:
            self.free[t].append(old[1])
        elif old is not None and old[0] == GPU:
            self.freed[t].append(self._slot(t, old[1]))
        new = (where, self._take(t, pos, where) if where != GONE else 0)
        if t == "kv":
            self.on_host += (where == HOST) - (old is not None and old[0] == HOST)
        table[pos] = new
        changed[t].append(pos)
        return old, new

    def _compact(self, t: str, changed: dict):
        """The step's freed GPU ranks of table t below the new count refilled by the rows above
        it (swap-remove), as (destination slots, source slots) device indices (one list), or
        None where no GPU row of t left this step."""
        freed, self.freed[t] = set(self.freed[t]), []
        if not freed:
            return None
        live, table = self.dense[t], self.kv if t == "kv" else self.x
        keep = len(live) - len(freed)
        holes = sorted(r for r in freed if r < keep)
        movers = [r for r in range(keep, len(live)) if r not in freed]
        for hole, mover in zip(holes, movers):
            live[hole] = live[mover]
            table[live[hole]] = (GPU, self._slot(t, hole))
            changed[t].append(live[hole])
        del live[keep:]
        return _index([[self._slot(t, r) for r in holes], [self._slot(t, r) for r in movers]], self.device).unbind()

    def advance(self, j: int) -> dict:
        """Step j's moves: {"kv": [(pos, old, new)], "x": [...]} (old None: a new row), the GPU
        rows leaving for the host ("evict") and the arena's row moves ("compact"), per table."""
        p, moves, changed = self.p, {"kv": [], "x": []}, {"kv": [], "x": []}
        lo_old, lo_del = (0, 0) if j == 0 else (p["old"][j - 1], p["deleted"][j - 1])
        for pos in range(lo_del, p["deleted"][j]):  # deleted first: their slots are free again
            if pos in self.kv or j == 0:
                moves["kv"].append((pos, *self._place("kv", pos, GONE, changed)))
        for pos in range(lo_old, p["old"][j]):  # left the recent window: the α-share goes to CPU
            if j == 0 or not self.alpha_share(pos):
                continue
            if self.kv[pos][0] == GPU:
                moves["kv"].append((pos, *self._place("kv", pos, HOST, changed)))
            if pos < self.last:
                moves["x"].append((pos, *self._place("x", pos, HOST, changed)))
        moves["compact"] = {t: self._compact(t, changed) for t in ("kv", "x")}  # before new rows take slots
        new = range(p["deleted"][0], p["n"][0]) if j == 0 else [p["n"][j] - 1]
        for pos in new:
            host = j == 0 and pos < p["old"][0] and self.alpha_share(pos)
            moves["kv"].append((pos, *self._place("kv", pos, HOST if host else GPU, changed)))
        for pos in (range(min(self.last, p["n"][0])) if j == 0 else [q for q in new if q < self.last]):
            host = j == 0 and pos < p["old"][0] and self.alpha_share(pos)
            moves["x"].append((pos, *self._place("x", pos, HOST if host else GPU, changed)))
        self._encode(self.enc, self.kv, changed["kv"], self.off)
        self._encode(self.xenc, self.x, changed["x"], self.xoff)
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
