"""A site profile that answers is monitored against the films it was adapted on, as the adapted networks scored
them on their held folds (kept in the profile), not against internal validation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xraycore.clinical import operating_points as operating
from xraycore.monitoring.reference_files import VALIDATION, load_reference

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "default"


def test_the_bundled_profile_is_its_own_reference():
    answering = operating.get(BUNDLED)
    assert answering.get("kind") == "site profile"
    profile = json.loads((BUNDLED / "sites" / answering["profile"] / "profile.json").read_text())
    reference = load_reference(BUNDLED)
    held = np.asarray(profile["held_out"]["logits"])
    np.testing.assert_allclose(reference.logits, held[:, 1] - held[:, 0])
    assert reference.labels.tolist() == [int(t == 1) for t in profile["held_out"]["truth"]]
    assert "cross-fitted" in reference.source and VALIDATION not in reference.source
    assert reference.threshold == answering["threshold"] and reference.temperature == answering["temperature"]
    assert load_reference(BUNDLED, reference=operating.INTERNAL).source == VALIDATION
