"""Sequence mixers behind one protocol (``Mixer``) and one registry (``build``, ``names``).

Importing this package registers every mixer.
"""

from .base import Mixer as Mixer
from .base import MixerSpec as MixerSpec
from .base import build as build
from .base import names as names
from .base import register as register
from .base import spec as spec
from .common import Dense as Dense

from . import aaren as _aaren  # noqa: F401  (registers "aaren")
from . import routing as _routing  # noqa: F401
from . import s5 as _s5  # noqa: F401
from . import s4 as _s4  # noqa: F401
from . import convs5 as _convs5  # noqa: F401
from . import lssl as _lssl  # noqa: F401
from . import hydra as _hydra  # noqa: F401
from . import lightnet as _lightnet  # noqa: F401
from . import plstm as _plstm  # noqa: F401
from . import attention as _attention  # noqa: F401
from . import convlstm as _convlstm  # noqa: F401
from . import deltaproduct as _deltaproduct  # noqa: F401  (registers "deltaproduct" and "deltanet")

from .linen import to_linen as to_linen
