"""File-backed data sets in their published formats, read from a local ``data_dir``
(nothing is downloaded): see ``pipeline.py`` for the shared cache and batching."""

from .pipeline import DatasetFilesError as DatasetFilesError
from .pipeline import FileDataset as FileDataset

from . import audio as _audio  # noqa: F401  (each module registers its tasks)
from . import images as _images  # noqa: F401
from . import text as _text  # noqa: F401
from . import video as _video  # noqa: F401
