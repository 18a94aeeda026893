"""What a reader is told beside a heat map: how much of it lies on the lung fields, in one plain sentence.

Diagnose and the PDF report say the same words, so they are made here, once, from the film and its heat map
(numpy and Pillow: the reading-room install has them). The share is measured on the lung-field estimate
(:mod:`lung_fields`, whose accuracy docs/heat-maps.md gives); the heat map itself is never masked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xraycore.explain.lung_fields import LungFields, estimate_lung_fields, lung_share

# The warning fires when the heat map is no denser on the lung fields than on the rest of the film (lift < 1).
# Not "under half of it on the lungs": the estimate covers about a fifth of a film (it leaves out the lung behind
# the heart and below the diaphragm), so under half is the rule on almost every film (97.5% of kermany_site), and
# a warning that is always on is a warning nobody reads.
MIN_LIFT = 1.0
EMPTY_SENTENCE = "The heat map is empty: no region pushes the model towards the finding."
OUTSIDE_SENTENCE = ("Most of the attention is outside the lungs (no denser on them than elsewhere): check for markers "
                    "or devices.")


@dataclass
class LungAttention:
    """The lung fields of a film, the share of its heat map on them (None: no fields, or an empty map), the words."""

    fields: LungFields
    share: float | None
    sentences: list[str]

    @property
    def mostly_outside(self) -> bool:
        return self.share is not None and outside_the_lungs(self.share, self.fields.area_share)


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
        return LungAttention(fields, None, [EMPTY_SENTENCE])
    sentences = [f"{share:.0%} of the heat map lies on the lung fields (an estimate from the film; they cover "
                 f"{fields.area_share:.0%} of it)."]
    if outside_the_lungs(share, fields.area_share):
        sentences.append(OUTSIDE_SENTENCE)
    return LungAttention(fields, share, sentences)


def outside_the_lungs(share: float, area_share: float) -> bool:
    """True when the heat map's share on the lung fields is no more than their share of the film (lift <= 1)."""
    return area_share <= 0 or share / area_share <= MIN_LIFT + 1e-9
