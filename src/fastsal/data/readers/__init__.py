"""One reader module per public dataset layout; each imports only :mod:`fastsal.data.base`.

A new dataset is a module here with a ``load_<name>(root, split)`` function and a layout string,
plus one entry in :data:`fastsal.data.datasets.DATASETS` (and its name in
:data:`fastsal.defaults.DATASET_NAMES`, which ``--help`` lists without importing the readers).
"""
