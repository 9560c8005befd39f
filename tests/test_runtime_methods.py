"""Each sparse method's attention with a real (smaller than S) budget against the same selection
computed here, in plain torch, from a dense cache holding the same rows (the papers' rules)."""
import math

import pytest
import torch

from test_runtime import B, PREFILL, TINY, engine, rope

H, HKV, D = TINY.n_heads, TINY.n_kv_heads, TINY.head_dim
G, L, N = H // HKV, TINY.n_layers, PREFILL + 1  # rows at attention time (the new token included)


def attention(q, K, V):
    """q [H,d] over K, V [H,n,d] (per query head rows)."""
    p = torch.softmax((q[:, None] @ K.transpose(-1, -2))[:, 0] / math.sqrt(D), -1)
    return (p[:, None] @ V)[:, 0]


def rows(K, positions):
    """K [Hkv,S,d] at positions [H,k] (query head h reads KV head h // G) -> [H,k,d]."""
    return torch.stack([K[h // G, positions[h]] for h in range(H)])


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(7)
    return [torch.randn(B, n, d, generator=gen) for n, d in ((H, D), (HKV, D), (HKV, D))]


def attention_pass(e, q, k, v):
    """Write k, v and read q in every layer, as a decode step does, without projections."""
    m = e.method
    m.begin_step(torch.zeros(B, dtype=torch.long))
    outs = []
    for layer in range(L):
        m.write(layer, k, v)
        outs.append(m.read(layer, q))
    m.end_step()
    return outs


def dense_cache(inputs, passes=1):
    e = engine()
    for _ in range(passes):
        attention_pass(e, *inputs)
    kv = e.method.kv
    return [(kv.keys(i)[:, :, : e.length], kv.values(i)[:, :, : e.length]) for i in range(L)]


def test_sparq_matches_algorithm_1(inputs):
    got = attention_pass(engine("sparq", {"k": 12, "r": 5, "local": 3}), *inputs)[-1]
    K, V = dense_cache(inputs)[-1]
    q = rope(inputs[0], PREFILL)
    for b in range(B):
        qg = q[b].reshape(HKV, G, D)
        i1 = qg.abs().sum(1).topk(5).indices  # [Hkv, r]
        for h in range(HKV):
            qs, Ks = qg[h][:, i1[h]], K[b, h][:, i1[h]]
            tau = torch.sqrt(D * qs.abs().sum(-1) / qg[h].abs().sum(-1))
            s_hat = torch.softmax(qs @ Ks.T / tau[:, None], -1)  # [G, N]
            total = s_hat.sum(0)
            total[-3:] = float("inf")  # the 3 most recent always in
            i2 = total.topk(12).indices
            alpha = s_hat[:, i2].sum(-1, keepdim=True)
            y = attention(q[b, h * G:(h + 1) * G], K[b, h, i2].expand(G, -1, -1), V[b, h, i2].expand(G, -1, -1))
            want = alpha * y + (1 - alpha) * V[b, h].mean(0)
            torch.testing.assert_close(got[b, h * G:(h + 1) * G], want, rtol=1e-4, atol=1e-5)


def test_quest_picks_pages_by_min_max_bound(inputs):
    P, budget = 16, 32
    got = attention_pass(engine("quest", {"page_size": P, "budget": budget}), *inputs)[-1]
    K, V = dense_cache(inputs)[-1]
    q = rope(inputs[0], PREFILL)
    pages = math.ceil(N / P)
    for b in range(B):
        kmin = torch.stack([K[b, :, p * P:(p + 1) * P].amin(1) for p in range(pages)], 1)  # [Hkv,pages,d]
        kmax = torch.stack([K[b, :, p * P:(p + 1) * P].amax(1) for p in range(pages)], 1)
        score = torch.maximum(q[b][:, None] * kmax.repeat_interleave(G, 0),
                              q[b][:, None] * kmin.repeat_interleave(G, 0)).sum(-1)  # [H, pages]
        chosen = score[:, :-1].topk(budget // P - 1).indices.tolist()
        for h in range(H):
            toks = [t for p in chosen[h] + [pages - 1] for t in range(p * P, min((p + 1) * P, N))]
            want = attention(q[b, h:h + 1], K[b, h // G, toks][None], V[b, h // G, toks][None])
            torch.testing.assert_close(got[b, h:h + 1], want, rtol=1e-4, atol=1e-5)


def test_streamingllm_rerotates_keys_to_cache_positions(inputs):
    sink, recent = 4, 20
    got = attention_pass(engine("streamingllm", {"sink": sink, "recent": recent}), *inputs)[-1]
    K, V = dense_cache(inputs)[-1]  # keys rotated at their true positions
    window = list(range(sink)) + list(range(N - recent - 1, N))  # sink + recent + the new token
    shift = torch.tensor([c - p for c, p in enumerate(window)], dtype=torch.float64)
    q = rope(inputs[0], len(window) - 1)
    for b in range(B):
        Kw = torch.stack([rope(K[b, :, p], s) for p, s in zip(window, shift)], 1)  # [Hkv, W, d]
        want = attention(q[b], Kw.repeat_interleave(G, 0), V[b, :, window].repeat_interleave(G, 0))
        torch.testing.assert_close(got[b], want, rtol=1e-4, atol=1e-5)


def test_duoattention_streaming_heads_see_sink_and_recent(inputs):
    sink, recent = 4, 16
    e = engine("duoattention", {"retrieval_ratio": 0.5, "sink": sink, "recent": recent})
    assert e.method.retrieval_mask.tolist() == [[True, False]] * L
    got = attention_pass(e, *inputs)[-1]
    K, V = dense_cache(inputs)[-1]
    q = rope(inputs[0], PREFILL)
    window = list(range(sink)) + list(range(N - recent - 1, N))
    for b in range(B):
        full = attention(q[b, :G], K[b, 0].expand(G, -1, -1), V[b, 0].expand(G, -1, -1))
        stream = attention(q[b, G:], K[b, 1, window].expand(G, -1, -1), V[b, 1, window].expand(G, -1, -1))
        torch.testing.assert_close(got[b], torch.cat([full, stream]), rtol=1e-4, atol=1e-5)


def test_tidaldecode_reuses_layer_2_selection_per_query_head(inputs):
    k = 10
    outs = attention_pass(engine("tidaldecode", {"k": k}), *inputs)
    cache = dense_cache(inputs)
    q = rope(inputs[0], PREFILL)
    for b in range(B):
        K2 = cache[2][0][b].repeat_interleave(G, 0)  # [H, N, d]
        chosen = (q[b][:, None] @ K2[:, :-1].transpose(-1, -2))[:, 0].topk(k).indices
        chosen = torch.cat([chosen, torch.full((H, 1), N - 1)], 1)
        for layer in (3, 4):
            K, V = cache[layer][0][b], cache[layer][1][b]
            want = attention(q[b], rows(K, chosen), rows(V, chosen))
            torch.testing.assert_close(outs[layer][b], want, rtol=1e-4, atol=1e-5)


def test_h2o_keeps_heavy_and_recent_and_attends_to_them(inputs):
    heavy, recent = 6, 5
    e = engine("h2o", {"heavy": heavy, "recent": recent})
    for _ in range(3):
        got = attention_pass(e, *inputs)[-1]
    K, V = dense_cache(inputs, passes=3)[-1]
    kept = e.method.slot_pos[-1]  # [B, Hkv, heavy + recent + 1]
    n = e.length
    q = rope(inputs[0], n - 1)
    for b in range(B):
        for h in range(HKV):
            held = set(kept[b, h].tolist())
            assert len(held) == heavy + recent + 1 and set(range(n - recent - 1, n)) <= held
        want = attention(q[b], rows(K[b], kept[b].repeat_interleave(G, 0)), rows(V[b], kept[b].repeat_interleave(G, 0)))
        torch.testing.assert_close(got[b], want, rtol=1e-4, atol=1e-5)


def test_alisa_attends_to_local_window_and_top_accumulated(inputs):
    e = engine("alisa", {"sparsity": 0.8})
    attention_pass(e, *inputs)
    K, V = dense_cache(inputs, passes=2)[-1]
    n = e.length + 1
    k = math.floor(n * 0.2 / 2 + 0.5)
    acc = e.method.acc[-1][:, : n - k].clone()  # before this step's update
    got = attention_pass(e, *inputs)[-1]
    q = rope(inputs[0], n - 1)
    for b in range(B):
        chosen = acc[b].topk(k).indices.tolist() + list(range(n - k, n))
        pos = torch.tensor(chosen).expand(H, -1)
        torch.testing.assert_close(got[b], attention(q[b], rows(K[b], pos), rows(V[b], pos)), rtol=1e-4, atol=1e-5)


def test_adore_releases_and_rebuilds():
    m, R = 32, 3
    e = engine("adore", {"m": m, "R": R})
    for t in range(4):
        e.step(torch.tensor([t, t + 5]))
    a = e.method
    assert a.count == m and a.chunk_pos.shape == (B, R + 1)  # R rebuilt + the current token
    assert (a.chunk_pos[:, -1] == e.length - 1).all()
    released = a.released[:, : e.length]
    assert (released.sum(1) == e.length - m).all()
    # the top-R input: the released tokens' scores, −inf for cached and future positions
    assert torch.equal(torch.isfinite(a.rebuild_score), a.released)
    assert torch.equal(a.rebuild_score[a.released], a.score[a.released])
    for b in range(B):  # cached and released partition the context; rebuilt tokens were released
        cached = set(a.slot_pos[b].tolist())
        assert len(cached) == m and all(released[b, p] for p in a.chunk_pos[b, :-1].tolist())
        assert cached.isdisjoint(torch.nonzero(released[b])[:, 0].tolist())


def test_adore_chunk_attention_sees_positions_up_to_its_own():
    """The reconstruction chunk (R rebuilt tokens + the current one) against attention written
    out here: each query over the cached rows and the chunk's rows with a position ≤ its own."""
    from kvsim.runtime import ops
    e = engine("adore", {"m": 32, "R": 3})
    for t in range(3):
        e.step(torch.tensor([t, t + 5]))
    a = e.method
    a.prepare(torch.tensor([7, 8]))
    T = a.chunk_pos.shape[1]
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, T, n, D, generator=gen) for n in (H, HKV, HKV))
    layer = 1
    cached_k = a.kv.keys(layer)[:, :, : a.m].clone()
    cached_v = a.kv.values(layer)[:, :, : a.m].clone()
    got = a.attend_chunk(layer, q, k, v, write=False)
    pos = a.chunk_pos[..., None]
    visible = (a.slot_pos[:, None, :] >= 0) & (a.slot_pos[:, None, :] <= a.chunk_pos[..., None])
    causal = a.chunk_pos[:, None, :] <= a.chunk_pos[..., None]
    want = ops.masked_attention(a.rotary(q, pos), [(cached_k, cached_v, visible),
                                                   (a.rotary(k, pos).transpose(1, 2), v.transpose(1, 2), causal)])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_adore_controller_state_stays_in_one_buffer():
    """The GRU state is updated in place: a CUDA graph captured over attention_only_step reads
    self.h by address, and torch.cuda.graph() empties the cache before the next capture, so a
    rebound self.h left that graph reading freed memory (illegal access on H100, S=16k, B=32)."""
    e = engine("adore", {"m": 32, "R": 3})
    a = e.method
    ptr, before = a.h.data_ptr(), a.h.clone()
    e.attention_only_step()
    assert a.h.data_ptr() == ptr and torch.equal(a.h, before)  # attention-only leaves it
    h = a.ctrl.gru(a._embed[torch.tensor([1, 2])], a.h)
    e.step(torch.tensor([1, 2]))
    assert a.h.data_ptr() == ptr
    torch.testing.assert_close(a.h, h)
