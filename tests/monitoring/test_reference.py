"""The monitoring reference: a site calibration keeps the films it was fitted on beside the model, and the monitor
compares with them; without one, internal validation answers."""

import json
import shutil

import pytest

from tests.clinical.test_safety_operating import make_site_sample, sharpen
from xraycore.clinical import operating_points as operating
from xraycore.evaluation import site_calibration
from xraycore.monitoring import reference_files


@pytest.fixture
def model_dir(tiny_run, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_run, target)
    return target


def test_a_site_calibration_keeps_its_films_as_the_monitoring_reference(model_dir, tmp_path):
    with pytest.raises(ValueError, match="internal validation.*holds 8 films"):  # the tiny run: 8 validation films
        reference_files.load_reference(model_dir)
    sharpen(model_dir)
    point = site_calibration.calibrate_folder(model_dir, make_site_sample(tmp_path / "site"), "site-a")
    assert site_calibration.REFERENCE_SCORES not in point
    assert site_calibration.REFERENCE_SCORES not in json.dumps(operating.load(model_dir))
    kept = json.loads((model_dir / reference_files.REFERENCE_FILE).read_text())["points"]["site-a"]
    assert len(kept["logits"]) == 100 and sum(kept["labels"]) == 50
    reference = reference_files.load_reference(model_dir)
    assert reference.source.startswith("site-a: site calibration films (100")
    assert reference.threshold == pytest.approx(point["threshold"])
    assert reference.temperature == pytest.approx(point["temperature"])
    with pytest.raises(ValueError, match="internal validation"):
        reference_files.load_reference(model_dir, reference="internal")
    with pytest.raises(ValueError):
        reference_files.load_reference(model_dir, reference="no-such-point")
