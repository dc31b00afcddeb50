"""Ready-made configs, shipped with the package so `seqmodels train NAME` works from an installed wheel.

Each module defines `get_config()`; `seqmodels list` shows them. The repository root has
`configs/` as a link to this folder, so `seqmodels train configs/NAME.py` works in a checkout.
"""
