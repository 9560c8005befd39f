"""Time the kernels on a GPU and pick launch configs: ``python -m kvsim.kernels.tune [--quick]``.

For each shape, times ``decode_attention`` under every config in ``CANDIDATES["attention"]`` and
torch SDPA (q of length 1, ``enable_gqa``) by CUDA-graph replay (median; GPU time without Python
launch overhead, which ``--overhead`` reports apart), and reports
achieved HBM bandwidth against the bytes a decode step must move: 2·B·Hkv·S·d·b (K and V, read
once) + 2·B·H·d·b (q, o). The KV cache of a timed shape is far larger than L2, so one buffer is
read cold each time. Prints one table; ``--json PATH`` writes the rows.
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from . import _common
from .decode import decode_attention
from .int8kv import decode_attention_int8, quantize_kv



def device_peak_Bps() -> float:
    """The datasheet HBM bandwidth of the GPU this runs on, from its profile (hw_profiles/)."""
    from kvsim.profiles import load_profile, profile_for_device
    name = profile_for_device(torch.cuda.get_device_name())
    if name is None:
        raise RuntimeError(f"no profile in hw_profiles/ names {torch.cuda.get_device_name()} (its device_names)")
    return load_profile(name).memory.bandwidth_Bps.value


def _bench(fn, graph=False) -> float:
    """Median seconds per call: do_bench (includes host launch time when that is the longer),
    or with ``graph`` the replay of a captured CUDA graph (GPU time only)."""
    import triton.testing
    if graph:
        with torch.cuda.stream(torch.cuda.Stream()):
            return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median") / 1e3
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3


def decode_inputs(B, H, Hkv, d, S, dtype=torch.bfloat16, device="cuda"):
    q = torch.randn(B, H, d, device=device, dtype=dtype)
    k = torch.randn(B, Hkv, S, d, device=device, dtype=dtype)
    v = torch.randn(B, Hkv, S, d, device=device, dtype=dtype)
    seq_lens = torch.full((B,), S, device=device, dtype=torch.int32)
    return q, k, v, seq_lens


def kv_bytes(B, H, Hkv, d, S, elem=2, row_extra=0):
    return 2 * B * Hkv * S * (d * elem + row_extra) + 2 * B * H * d * 2


def sdpa_time(q, k, v) -> float:
    import torch.nn.functional as F
    q4 = q[:, :, None, :]
    return _bench(lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True), graph=True)


def sweep_attention(B, H, Hkv, d, S, configs=None, kind="attention"):
    """Rows {config, s, TBps, frac_peak} for each config (fastest first), plus 'sdpa'."""
    q, k, v, seq_lens = decode_inputs(B, H, Hkv, d, S)
    splits = _common.splits_for(B, Hkv, S)
    if kind == "attention_int8":
        (kq, ks, kz), (vq, vs, vz) = quantize_kv(k), quantize_kv(v)
        del k, v
        run = lambda: decode_attention_int8(q, kq, vq, ks, kz, vs, vz, seq_lens,  # noqa: E731
                                            num_splits=splits)
        nbytes = kv_bytes(B, H, Hkv, d, S, elem=1, row_extra=4)
    else:
        run = lambda: decode_attention(q, k, v, seq_lens, num_splits=splits)  # noqa: E731
        nbytes = kv_bytes(B, H, Hkv, d, S)
    rows, peak = [], device_peak_Bps()
    saved = dict(_common.CONFIGS[kind])
    try:
        for cfg in configs or _common.CANDIDATES[kind]:
            _common.CONFIGS[kind].update(cfg)
            try:
                t = _bench(run, graph=True)
            except Exception as e:  # out of shared memory, etc.: report and go on
                rows.append(dict(config=cfg, error=repr(e)[:120]))
                continue
            rows.append(dict(config=cfg, s=t, TBps=nbytes / t / 1e12,
                             frac_peak=nbytes / t / peak))
    finally:
        _common.CONFIGS[kind].clear()
        _common.CONFIGS[kind].update(saved)
    rows = sorted((r for r in rows if "s" in r), key=lambda r: r["s"]) + \
        [r for r in rows if "s" not in r]
    if kind == "attention":
        t = sdpa_time(q, k, v)
        rows.append(dict(config="sdpa", s=t, TBps=nbytes / t / 1e12,
                         frac_peak=nbytes / t / peak))
    return dict(shape=dict(B=B, H=H, Hkv=Hkv, d=d, S=S, splits=splits), rows=rows)


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def overhead(B=1, H=32, Hkv=8, d=128, S=4096, calls=200):
    """Host time per call (no sync inside the loop), do_bench time, and CUDA-graph replay time
    (GPU time without launch gaps) of decode_attention and SDPA, in microseconds."""
    import time

    import torch.nn.functional as F
    q, k, v, seq_lens = decode_inputs(B, H, Hkv, d, S)
    splits = _common.splits_for(B, Hkv, S)
    fns = {"triton": lambda: decode_attention(q, k, v, seq_lens, num_splits=splits),
           "sdpa": lambda: F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True)}
    out = {}
    for name, fn in fns.items():
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        host = (time.perf_counter() - t0) / calls
        torch.cuda.synchronize()
        replay = _bench(_common.capture_graph(fn, repeat=20)) / 20
        out[name] = dict(host_us=host * 1e6, bench_us=_bench(fn) * 1e6, graph_us=replay * 1e6)
    from . import _attention
    real_launcher = _attention.launcher
    _attention.launcher = lambda kernel, t: _NoLaunch()  # the Python around the launches
    try:
        t0 = time.perf_counter()
        for _ in range(calls):
            fns["triton"]()
        out["triton"]["python_only_us"] = (time.perf_counter() - t0) / calls * 1e6
    finally:
        _attention.launcher = real_launcher
    print(f"overhead B={B} S={S} splits={splits}: " + "; ".join(
        f"{n}: host {r['host_us']:.1f} us, do_bench {r['bench_us']:.1f} us, graph "
        f"{r['graph_us']:.1f} us" for n, r in out.items())
        + f"; python around the launches {out['triton']['python_only_us']:.1f} us", flush=True)
    return out


def others(B=8, H=32, Hkv=8, d=128, S=131072):
    """Time the other kernels at one decode shape; bandwidth over the bytes each must move."""
    from .gather import gathered_decode_attention
    from kvsim.methods.quest.kernels import quest_page_scores
    from kvsim.methods.sparq.kernels import sparq_approx_scores
    q, k, v, seq_lens = decode_inputs(B, H, Hkv, d, S)
    dev, rows = q.device, []

    def add(name, fn, nbytes):
        t = _bench(fn, graph=True)
        rows.append((name, t, nbytes / t / 1e12))

    for K in (1024, 4096, 16384):  # token lists shared by a KV head's query heads / per query head
        idx = torch.stack([torch.randperm(S, device=dev)[:K] for _ in range(B * Hkv)])
        idx = idx.reshape(B, Hkv, K).int()
        cnt = torch.full((B, Hkv), K, device=dev, dtype=torch.int32)
        add(f"gather shared K={K}", lambda: gathered_decode_attention(q, k, v, idx, cnt),
            B * Hkv * K * (4 * d + 4))
        idx_h = torch.stack([torch.randperm(S, device=dev)[:K] for _ in range(B * H)])
        idx_h = idx_h.reshape(B, H, K).int()
        cnt_h = torch.full((B, H), K, device=dev, dtype=torch.int32)
        add(f"gather per-head K={K}", lambda: gathered_decode_attention(q, k, v, idx_h, cnt_h),
            B * H * K * (4 * d + 4))
    k_t = k.transpose(2, 3).contiguous()
    del v
    for r in (16, 32):
        i1 = torch.stack([torch.randperm(d, device=dev)[:r] for _ in range(B * Hkv)])
        i1 = i1.reshape(B, Hkv, r).int()
        tau = torch.ones(B, H, device=dev)
        splits = _common.splits_for(B, Hkv, S)
        add(f"sparq scores r={r}",
            lambda: sparq_approx_scores(q, k_t, i1, seq_lens, tau, num_splits=splits),
            B * Hkv * S * r * 2 + 3 * B * H * S * 4)
    del k_t
    P = S // 16
    kmin, kmax = k[:, :, :P], k[:, :, P:2 * P]
    n_pages = torch.full((B,), P, device=dev, dtype=torch.int32)
    add(f"quest P={P}", lambda: quest_page_scores(q, kmin, kmax, n_pages),
        B * Hkv * P * 2 * d * 2 + B * H * P * 4)
    peak = device_peak_Bps()
    for name, t, tbps in rows:
        frac = 100 * tbps * 1e12 / peak
        print(f"  {name:28s} {t * 1e6:9.1f} us {tbps:6.3f} TB/s {frac:5.1f}%",
              flush=True)
    return rows


def _fmt(res) -> str:
    sh = res["shape"]
    head = f"B={sh['B']} H={sh['H']} Hkv={sh['Hkv']} d={sh['d']} S={sh['S']} splits={sh['splits']}"
    lines = [head]
    for r in res["rows"]:
        if "s" in r:
            lines.append(f"  {str(r['config']):70s} {r['s'] * 1e6:9.1f} us {r['TBps']:6.3f} TB/s "
                         f"{100 * r['frac_peak']:5.1f}%")
        else:
            lines.append(f"  {str(r['config']):70s} {r['error']}")
    return "\n".join(lines)


def _score(cfg, results) -> float:
    """Sum over shapes of the config's time over the fastest config's time (inf if it failed)."""
    total = 0.0
    for res in results:
        times = [r["s"] for r in res["rows"] if "s" in r and r["config"] != "sdpa"]
        mine = [r["s"] for r in res["rows"] if r["config"] == cfg and "s" in r]
        total += mine[0] / min(times) if mine else math.inf
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="time only the current config")
    ap.add_argument("--kind", default="attention", choices=["attention", "attention_int8"])
    ap.add_argument("--json", default=None)
    ap.add_argument("--overhead", action="store_true", help="host vs GPU time at small sizes")
    ap.add_argument("--others", action="store_true", help="time gather, SparQ and Quest kernels")
    ap.add_argument("--configs", default=None,
                    help="JSON list of configs to time (instead of all candidates)")
    args = ap.parse_args(argv)
    if args.overhead:
        return [overhead(1, 32, 8, 128, S) for S in (1024, 4096, 16384)]
    if args.others:
        return others()
    shapes = [(8, 32, 8, 128, 131072), (1, 32, 8, 128, 131072), (8, 32, 8, 128, 32768),
              (1, 32, 8, 128, 4096), (8, 32, 32, 128, 16384)]
    out = []
    if not args.quick:  # every candidate on the two 128k shapes; keep the best on both
        candidates = json.loads(args.configs) if args.configs else None
        for shape in shapes[:2]:
            out.append(sweep_attention(*shape, configs=candidates, kind=args.kind))
            print(_fmt(out[-1]), flush=True)
        best = min(candidates or _common.CANDIDATES[args.kind], key=lambda cfg: _score(cfg, out))
        _common.set_config(args.kind, **best)
        print(f"best config on both: {best}", flush=True)
    for shape in shapes:
        out.append(sweep_attention(*shape, configs=[dict(_common.CONFIGS[args.kind])],
                                   kind=args.kind))
        print(_fmt(out[-1]), flush=True)
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return out


if __name__ == "__main__":
    main()
