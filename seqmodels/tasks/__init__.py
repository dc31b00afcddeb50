"""Tasks: deterministic numpy batches from ``(split, index, batch_size, seed)``, no download.

File-backed data sets (``files/``) read published formats from a local folder.

``task_names()`` lists them; ``build_task(name, **options)`` builds one. See
``base.py`` for the batch format.
"""

from .base import Task as Task
from .base import TaskIO as TaskIO
from .base import build_task as build_task
from .base import register_task as register_task
from .base import task_class as task_class
from .base import task_names as task_names
from .base import task_options as task_options

from . import arrows as _arrows  # noqa: F401  (each module registers its tasks)
from . import copying as _copying  # noqa: F401
from . import datasets as _datasets  # noqa: F401
from . import files as _files  # noqa: F401
from . import forecasting as _forecasting  # noqa: F401
from . import groups as _groups  # noqa: F401
from . import listops as _listops  # noqa: F401
from . import memory as _memory  # noqa: F401
from . import recall as _recall  # noqa: F401
from . import shapes as _shapes  # noqa: F401
