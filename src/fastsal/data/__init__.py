"""Eye-fixation data: fixation points, fixation maps, densities and dataset readers."""
from fastsal.data.datasets import Sample, load_osie, read_split
from fastsal.data.fixations import (
    fixation_density,
    fixation_map,
    points_from_map,
    rescale_points,
)

__all__ = [
    "Sample",
    "fixation_density",
    "fixation_map",
    "load_osie",
    "points_from_map",
    "read_split",
    "rescale_points",
]
