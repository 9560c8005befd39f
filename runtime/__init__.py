"""Reference runtime: a Llama-shaped decoder with synthetic weights running each method
with torch (CPU) or the Triton kernels (CUDA). Needs the `runtime` extra."""
