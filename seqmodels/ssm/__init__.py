"""State-space math: HiPPO matrices, NPLR/DPLR forms, discretization, SSM kernels.

Pure functions, no parameters, no Flax; imports only ``seqmodels.scans``, JAX and NumPy.

* :mod:`.hippo` -- HiPPO transition matrices (LegS, LegT, LagT, FouT), the
  normal/diagonal-plus-low-rank decomposition (S4 Thm. 1), S4D and S5 (HiPPO-N) inits.
  NumPy float64, init time only.
* :mod:`.discretize` -- zero-order hold and bilinear / generalized bilinear rules, for
  diagonal (S4D, S5) and dense (LSSL, S4) state matrices. JAX.
* :mod:`.kernels` -- the S4D Vandermonde kernel, the S4 DPLR kernel (Cauchy sums +
  Woodbury at the roots of unity), the LSSL Krylov kernel. JAX, jit-able with static L.

Papers: HiPPO (Gu et al., NeurIPS 2020); LSSL "Combining Recurrent, Convolutional, and
Continuous-time Models with Linear State-Space Layers" (Gu et al., NeurIPS 2021); S4
"Efficiently Modeling Long Sequences with Structured State Spaces" (Gu, Goel, Ré,
ICLR 2022); S4D "On the Parameterization and Initialization of Diagonal State Space
Models" (Gu et al., NeurIPS 2022); S5 "Simplified State Space Layers for Sequence
Modeling" (Smith, Warrington, Linderman, ICLR 2023).
"""

from .discretize import discretize_bilinear_diag as discretize_bilinear_diag
from .discretize import discretize_dense as discretize_dense
from .discretize import discretize_diag as discretize_diag
from .discretize import discretize_zoh_diag as discretize_zoh_diag
from .hippo import NPLR as NPLR
from .hippo import HippoN as HippoN
from .hippo import hippo_fout as hippo_fout
from .hippo import hippo_lagt as hippo_lagt
from .hippo import hippo_legs as hippo_legs
from .hippo import hippo_legt as hippo_legt
from .hippo import nplr as nplr
from .hippo import nplr_legs as nplr_legs
from .hippo import rank_correction as rank_correction
from .hippo import s4d_init as s4d_init
from .hippo import s5_hippo_n as s5_hippo_n
from .hippo import transition as transition
from .kernels import cauchy as cauchy
from .kernels import dplr_c_from_c_tilde as dplr_c_from_c_tilde
from .kernels import dplr_c_tilde as dplr_c_tilde
from .kernels import dplr_dense as dplr_dense
from .kernels import dplr_kernel as dplr_kernel
from .kernels import krylov as krylov
from .kernels import krylov_kernel as krylov_kernel
from .kernels import s4d_kernel as s4d_kernel
from .kernels import vandermonde as vandermonde
from .timescale import log_uniform_log_dt as log_uniform_log_dt
