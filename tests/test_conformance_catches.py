"""The conformance laws catch a broken method: a toy whose score traffic falls as the context
grows (1.96 TB at 128k, more below) fails the monotone and the overhead laws, while the same toy
without the broken op passes them."""
from __future__ import annotations

import numpy as np
import pytest

from conformance_laws import law_monotone, law_overhead, law_totals
from kvsim.cost import Op
from kvsim.methods.base import Method

TB_AT_128K = 1.96e12


class Toy(Method):
    name = "toy"
    paper = "none: a deliberately broken method for the conformance suite's own test"
    summary = "dense attention plus a score pass whose traffic falls with the context"
    broken: bool = True

    def attention_ops(self, model, wl):
        ops = super().attention_ops(model, wl)
        if self.broken:  # bytes ∝ 1/S: wrong for any real scoring pass
            ops.append(Op("layers/attn/toy_scores", "attention",
                          hbm_read=TB_AT_128K * 131072 / np.asarray(wl.seq, dtype=float) * wl.batch))
        return ops


def test_the_laws_pass_a_sound_toy():
    toy = Toy(broken=False)
    law_monotone(toy, "llama-3.1-8b", [4096, 131072], [1, 8])
    law_overhead(toy, "llama-3.1-8b", 131072, 8)
    law_totals(toy, "llama-3.1-8b", [4096, 65536], [1, 16])


def test_monotone_law_fails_the_broken_toy():
    with pytest.raises(AssertionError, match="falls as the context grows"):
        law_monotone(Toy(), "llama-3.1-8b", [4096, 131072], [1, 8])


def test_overhead_law_fails_the_broken_toy():
    with pytest.raises(AssertionError, match="dense \\+ overhead"):
        law_overhead(Toy(), "llama-3.1-8b", 131072, 8)
