"""Real-format data layer: loaders, splits, batches, caching, downloads and synthetic generators.

Each loader returns an :class:`ImageSet` with ``images`` (uint8 N x 3 x H x W, RGB),
``labels`` (int64), ``classes``, ``skipped`` (files that could not be read) and ``key`` (the
dataset's identity: its cache key, code fingerprint included, for run keys).
"""
from labkit.data.batches import (IMAGENET_MEAN, IMAGENET_STD, Batches, decode_size, per_class_subset,
                                 random_crop_flip, stratified_split)
from labkit.data.core import DatasetNotFoundError, ImageSet
from labkit.data.loaders import (DOGS_VS_CATS_CLASSES, STL10_CLASSES, load_dogs_vs_cats, load_stl10,
                                 load_tiny_imagenet)
from labkit.data.marker import generated_marker

__all__ = [
    "Batches", "DatasetNotFoundError", "decode_size", "DOGS_VS_CATS_CLASSES", "generated_marker", "IMAGENET_MEAN",
    "IMAGENET_STD", "ImageSet", "per_class_subset", "STL10_CLASSES", "load_dogs_vs_cats", "load_stl10",
    "load_tiny_imagenet", "random_crop_flip",
    "stratified_split",
]
