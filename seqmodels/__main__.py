"""``python -m seqmodels``: the ``seqmodels`` command (``seqmodels.train.cli``)."""

import sys

from seqmodels.train.cli import main

sys.exit(main())
