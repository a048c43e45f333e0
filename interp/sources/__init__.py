"""Data sources: the built-in stimuli, a folder of images with a label table, a Hugging
Face ``datasets`` dataset, and the registry that opens a path as one of them
(:func:`open_source`)."""

from interp.sources.arrays import ArrayImages
from interp.sources.base import ImageSet, Question, open_source, register_source, registered_sources
from interp.sources.export import write_label_folder
from interp.sources.hf import HuggingFaceImages
from interp.sources.mmvp import MMVPImages
from interp.sources.table import TABLE_NAMES, LabelTable

__all__ = [
    "ArrayImages",
    "TABLE_NAMES",
    "HuggingFaceImages",
    "ImageSet",
    "Question",
    "LabelTable",
    "MMVPImages",
    "open_source",
    "register_source",
    "registered_sources",
    "write_label_folder",
]
