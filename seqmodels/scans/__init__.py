"""The scan core: pure, jit-able, differentiable recurrences over batch-first arrays.

Every function takes time on axis 1, an optional initial state, a ``method`` and
returns ``(outputs, final_state)``. ``seqmodels.scans.reference`` holds a plain loop
for each, used by the tests. The six recurrences below can run with their time axis
sharded across devices (``seqmodels.scans.parallel``): inside
``with scans.sequence_parallel(mesh, axis="seq"):``, or when their main input is
sharded along time over an explicit mesh axis.

Signatures state array shapes with jaxtyping (documentation for readers and type
checkers; nothing is checked at run time beyond each function's own input checks).
The letters: ``B`` batch, ``L`` length (time, axis 1), ``H`` heads, ``Dk`` / ``Dv`` key /
value features, ``N`` state size of a dense transition, ``n_h`` Householder steps per
token, ``K`` kernel length, ``X`` / ``Y`` grid sides, ``*S`` / ``*heads`` any further
axes, ``...`` any axes (broadcastable where the docstring says so).
"""

from ._checks import METHODS as METHODS
from .conv import fft_conv as fft_conv
from .delta import delta_rule as _delta_rule
from .grid import GRID_METHODS as GRID_METHODS
from .grid import grid_scan as grid_scan
from .grid import plstm_grid_scan as plstm_grid_scan
from .linear import diagonal_ssm as diagonal_ssm
from .linear import linear_scan as _linear_scan
from .linear_attention import METHODS as LINEAR_ATTENTION_METHODS
from .linear_attention import linear_attention as _linear_attention
from .matrix import matrix_scan as _matrix_scan
from .parallel import sequence_parallel as sequence_parallel
from .parallel import sequence_parallel_active as sequence_parallel_active
from .parallel import shardable as _shardable
from .plstm import plstm_scan as _plstm_scan
from .recurrent import nonlinear_scan as nonlinear_scan
from .reference import SoftmaxState as SoftmaxState
from .softmax import CUMULATIVE_LOGSUMEXP_METHODS as CUMULATIVE_LOGSUMEXP_METHODS
from .softmax import cumulative_logsumexp as cumulative_logsumexp
from .softmax import softmax_scan as _softmax_scan

# One wrapper per recurrence, applied here where they are exported, so that every
# layer calling ``scans.<name>`` is sequence-parallel without a change of its own.
# ``diagonal_ssm`` and ``cumulative_logsumexp`` are not wrapped: under sequence
# parallelism their time axis is gathered (S4D's scan mode then takes ``linear_scan``).
linear_scan = _shardable(_linear_scan)
matrix_scan = _shardable(_matrix_scan)
softmax_scan = _shardable(_softmax_scan)
linear_attention = _shardable(_linear_attention)
delta_rule = _shardable(_delta_rule)
plstm_scan = _shardable(_plstm_scan)
