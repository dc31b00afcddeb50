"""Backbones: residual stacks around any registered mixer."""

from .sequence import SequenceModel as SequenceModel
from .sequence import checked as checked
from .sequence import generate as generate
from .video import VideoModel as VideoModel
from .image import ImageModel as ImageModel
