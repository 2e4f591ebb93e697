"""The terms of the datasets that shipped weights were trained on, in one place.

Weights learned from a dataset carry its terms: a model card must say, for every dataset its
weights saw (fixations, pseudo-label photos, and the ImageNet classifier the encoder started from),
under which terms that data may be used. Each weights card (``weights/<model>.json``) lists those
datasets in ``datasets``; ``scripts/ship_weights.py`` renders the card's licence line from
:data:`DATASET_TERMS`, and a test checks that every shipped card names the terms of each dataset
it lists. No torch: ``fastsal models`` and the docs tooling read it.
"""
from __future__ import annotations

from collections.abc import Sequence

#: name -> (what the data is, its terms). Names are those of ``fastsal.data`` (and ``imagenet`` for
#: the ImageNet classifier an encoder was initialised from).
DATASET_TERMS: dict[str, tuple[str, str]] = {
    "osie": ("OSIE fixations and photos (Xu et al., JoV 2014)", "MIT licence"),
    "mit1003": ("MIT1003 fixations and photos (Judd et al., ICCV 2009)",
                "research use, as distributed through the MIT saliency benchmark"),
    "scene": ("NUS Scene fixations (SUN2012 photos)",
              "MIT licence; the photos keep their owners' copyright"),
    "imagenet-sample": ("ImageNet photos (a 1,000-image sample, pseudo-labelled)",
                        "ImageNet's terms: research and non-commercial use"),
    "imagenet": ("ImageNet, through the encoder's ImageNet-classifier initialisation",
                 "ImageNet's terms: research and non-commercial use; the initial weights themselves "
                 "are Apache-2.0"),
}


class LicenceError(KeyError):
    """A weights card lists a dataset whose terms are not recorded here (a packaging bug)."""


def terms_line(datasets: Sequence[str]) -> str:
    """The model card's licence line for weights trained on ``datasets`` (in that order)."""
    missing = [d for d in datasets if d not in DATASET_TERMS]
    if missing:
        raise LicenceError(f"no terms recorded for {', '.join(missing)}; add them to fastsal.licences.DATASET_TERMS")
    if not datasets:
        raise LicenceError("a weights card must list the datasets its weights were trained on")
    parts = [f"{DATASET_TERMS[d][0]}: {DATASET_TERMS[d][1]}" for d in datasets]
    return "- **Licence of the training data**: " + "; ".join(parts) + "."


__all__ = ["DATASET_TERMS", "LicenceError", "terms_line"]
