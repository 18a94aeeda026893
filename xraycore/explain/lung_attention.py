"""What a reader is told beside a heat map: how much of it lies on the lung fields, in one plain sentence.

Diagnose and the PDF report say the same words, so they are made here, once, from the film and its heat map
(numpy and Pillow: the reading-room install has them). The share is measured on the lung-field estimate
(:mod:`lung_fields`, whose accuracy docs/heat-maps.md gives); the heat map itself is never masked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xraycore.explain.lung_fields import LungFields, estimate_lung_fields, lung_share

MOSTLY_OUTSIDE = 0.5  # below this share on the lungs, most of the attention is elsewhere
OUTSIDE_SENTENCE = "Most of the attention is outside the lungs: check for markers or devices."


@dataclass
class LungAttention:
    """The lung fields of a film, the share of its heat map on them (None: no fields, or an empty map), the words."""

    fields: LungFields
    share: float | None
    sentences: list[str]

    @property
    def mostly_outside(self) -> bool:
        return self.share is not None and self.share < MOSTLY_OUTSIDE


def lung_attention(image: np.ndarray, heatmap: np.ndarray | None) -> LungAttention | None:
    """The heat map's share on the lung fields of ``image`` and what to say about it; None without a heat map."""
    if heatmap is None or image is None:
        return None
    fields = estimate_lung_fields(image)
    if not fields.found:
        return LungAttention(fields, None, [f"No lung fields were found on this film ({fields.reason}), so the share "
                                            "of the heat map on the lungs cannot be given."])
    share = lung_share(heatmap, fields.mask)
    if share is None:
        return LungAttention(fields, None, ["The heat map is empty: no region pushes the model towards the finding."])
    sentences = [f"{share:.0%} of the heat map lies on the lung fields (an estimate from the film; they cover "
                 f"{fields.area_share:.0%} of it)."]
    if share < MOSTLY_OUTSIDE:
        sentences.append(OUTSIDE_SENTENCE)
    return LungAttention(fields, share, sentences)
