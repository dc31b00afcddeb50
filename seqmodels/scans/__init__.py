"""The scan core: pure, jit-able, differentiable recurrences over batch-first arrays.

Every function takes time on axis 1, an optional initial state, a ``method`` and
returns ``(outputs, final_state)``. ``seqmodels.scans.reference`` holds a plain loop
for each, used by the tests.
"""

from .linear import linear_scan as linear_scan
from .matrix import matrix_scan as matrix_scan
from .softmax import softmax_scan as softmax_scan
from .conv import fft_conv as fft_conv
from .linear_attention import linear_attention as linear_attention
from .delta import delta_rule as delta_rule
from .grid import grid_scan as grid_scan
from .reference import SoftmaxState as SoftmaxState
