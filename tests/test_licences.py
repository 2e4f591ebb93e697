"""Every shipped model card states the terms of each dataset its weights were trained on."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastsal.licences import DATASET_TERMS, LicenceError, terms_line
from fastsal.models.registry import WEIGHTS


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_card_states_terms_of_every_dataset(name):
    spec = WEIGHTS[name]
    assert spec.datasets, f"{name}.json lists no training datasets"
    card = spec.card_path.read_text(encoding="utf-8")
    for dataset in spec.datasets:
        what, terms = DATASET_TERMS[dataset]  # KeyError: a dataset with no recorded terms
        assert f"{what}: {terms}" in card, f"{spec.card} does not state the terms of {dataset}"
    assert terms_line(spec.datasets) in card.splitlines()


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_datasets_named_in_the_recipe_are_listed(name):
    """A dataset named in a card's data or recipe text (or an ImageNet init) must be in ``datasets``."""
    spec = WEIGHTS[name]
    text = f"{spec.data} {spec.recipe}".lower()
    for dataset in DATASET_TERMS:
        if re.search(rf"\b{re.escape(dataset)}\b", text):
            assert dataset in spec.datasets, f"{name}: {dataset} is in its recipe but not in datasets"
    frozen_from = WEIGHTS.get(spec.encoder_from) if spec.encoder_from else None
    if frozen_from is not None:  # a decoder on a frozen shipped encoder inherits what that encoder learned
        # ... but not a dataset the source used only to fit its calibration (a val split, after
        # training; the calibration lives in the source's meta and does not reach the decoder)
        calibration_only = {d for d in frozen_from.datasets
                            if d not in frozen_from.data.lower() and frozen_from.calibration
                            and re.search(rf"\b{re.escape(d)}\b", frozen_from.calibration)}
        assert set(frozen_from.datasets) - calibration_only <= set(spec.datasets)


def test_terms_line_refuses_unknown_or_missing_datasets():
    with pytest.raises(LicenceError, match="coco"):
        terms_line(["osie", "coco"])
    with pytest.raises(LicenceError):
        terms_line([])


def test_readme_has_a_licences_section_naming_each_shipped_dataset():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Licences", 1)[1]
    for dataset in sorted({d for spec in WEIGHTS.values() for d in spec.datasets}):
        assert DATASET_TERMS[dataset][1].split(";")[0] in section, dataset
