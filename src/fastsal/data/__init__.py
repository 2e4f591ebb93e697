"""Eye-fixation data: fixation points, fixation maps, densities and dataset readers."""
from fastsal.data.datasets import DATASETS, DatasetInfo, Sample, load_dataset, load_mit1003, load_osie, read_split
from fastsal.data.fixations import (
    fixation_density,
    fixation_map,
    points_from_map,
    rescale_points,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "load_dataset",
    "load_mit1003",
    "Sample",
    "fixation_density",
    "fixation_map",
    "load_osie",
    "points_from_map",
    "read_split",
    "rescale_points",
]
