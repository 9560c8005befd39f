"""Triton kernels for decode attention and the sparse methods. Needs the `runtime` extra.

decode.py  dense split-K decode, windowed (DuoAttention) decode, RoPE-on-load (StreamingLLM)
gather.py  attention over listed rows (SparQ, Quest, H2O, ALISA, TidalDecode)
scores.py  attention that also writes its logits; weights accumulated (H2O, ALISA, TidalDecode)
int8kv.py  per-row asymmetric int8 KV quantization and int8 decode attention
_attention.py  the split-K launcher every attention above goes through, and the split-K combine;
           its kernels, one per way of reading rows (bf16, int8, rope-on-load, position-masked),
           in _attention_kernels.py, built from the device helpers in _attention_parts.py
tune.py    GPU timing and config search (``python -m kvsim.kernels.tune``); configs in _common.CONFIGS
Each kernel has a pure-torch ``<name>_ref`` with the same signature. Kernels only one method
uses sit beside it (kvsim/methods/<name>/kernels*.py: SparQ, Quest, H2O, ADORE).
"""
