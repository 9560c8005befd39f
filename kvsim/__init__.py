"""kvsim: the simulator (numpy only) and, with the `runtime` extra, its reference runtime.

The runtime and its Triton kernels are ``kvsim.runtime`` and ``kvsim.kernels``. An installed wheel
holds them inside this package; in a source checkout they are the top-level ``runtime/`` and
``kernels/`` folders beside ``kvsim/``, which this adds to the package's search path.
"""
from pathlib import Path as _Path

_checkout = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "runtime").is_dir() and (_checkout / "runtime" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (the package's own search path)
