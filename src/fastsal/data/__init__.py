"""Eye-fixation data: fixation points, fixation maps, densities and dataset readers.

Layers: :mod:`~fastsal.data.base` (the sample, errors, shared checks), one reader module per layout
under :mod:`~fastsal.data.readers` plus :mod:`~fastsal.data.pseudo`, and the registry
:mod:`~fastsal.data.datasets` (``DATASETS``, ``load_dataset``), re-exported here.
"""
from fastsal.data.datasets import (
    DATASETS,
    DatasetError,
    DatasetInfo,
    DatasetWarning,
    Sample,
    dataset_info,
    dataset_roots,
    load_cat2000,
    load_dataset,
    load_folder,
    load_mit1003,
    load_osie,
    load_salicon,
    load_scene,
    read_split,
)
from fastsal.data.fixations import (
    fixation_density,
    fixation_map,
    points_from_map,
    rescale_points,
)

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetInfo",
    "DatasetWarning",
    "load_cat2000",
    "load_dataset",
    "load_folder",
    "load_mit1003",
    "load_salicon",
    "load_scene",
    "Sample",
    "dataset_info",
    "dataset_roots",
    "fixation_density",
    "fixation_map",
    "load_osie",
    "points_from_map",
    "read_split",
    "rescale_points",
]
