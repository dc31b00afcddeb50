"""seqmodels: interchangeable sequence mixers on one core of parallel scans."""

import os as _os
from importlib import metadata as _metadata

__version__ = "0.1.0"

# jaxlib 0.10's CPU backend runs some transposes through YNNPACK fusions whose
# `fuse_contiguous_dims` writes out of bounds: the gradient of a `plstm2d` layer
# (B = 2, a 5 × 7 grid, d_model 16, 2 heads) then dies with a segmentation fault in
# `YnnFusionThunk`. With those fusions off, XLA emits its own kernels and the crash is
# gone. XLA reads XLA_FLAGS when its backend starts, so this works whenever
# seqmodels is imported before the first computation; a flag the user set wins.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def _jaxlib_version() -> str:
    try:
        return _metadata.version("jaxlib")
    except _metadata.PackageNotFoundError:
        return ""


if _jaxlib_version().startswith("0.10.") and _YNN_FLAG not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = f"{_os.environ.get('XLA_FLAGS', '')} {_YNN_FLAG}=".strip()
