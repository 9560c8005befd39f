"""Triton kernels for decode attention and the sparse methods. Needs the `runtime` extra."""
