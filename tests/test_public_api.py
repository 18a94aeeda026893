"""The public API at the top of the package: ``from xraycore import Predictor, read_xray, evaluate, calibrate,
train`` and the other names a script needs resolve to the functions they stand for, and importing ``xraycore``
stays cheap: no torch (a reading-room install has none), nothing beyond the standard library."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import xraycore

REPO = Path(__file__).resolve().parents[1]

NAMED_IN_THE_ISSUE = ("Predictor", "Prediction", "read_xray", "XrayReadError", "evaluate", "calibrate", "train",
                      "TrainConfig", "open_run", "list_runs", "bundle_model", "export_model")


def test_the_names_scripts_need_are_exported() -> None:
    assert set(NAMED_IN_THE_ISSUE) <= set(xraycore.__all__)
    assert set(NAMED_IN_THE_ISSUE) <= set(dir(xraycore))


@pytest.mark.parametrize("name", sorted(xraycore.__all__))
def test_each_public_name_resolves_to_the_object_of_its_module(name: str) -> None:
    import importlib

    module, attribute = xraycore._API[name]
    expected = getattr(importlib.import_module(f"xraycore.{module}"), attribute)
    assert getattr(xraycore, name) is expected
    assert callable(expected), f"{name} is neither a function nor a class"


def test_the_verbs_stand_for_the_functions_the_issue_names() -> None:
    from xraycore.evaluation.external import evaluate_folder
    from xraycore.evaluation.site_calibration import calibrate_folder
    from xraycore.training.loop import train

    from xraycore import calibrate, evaluate
    from xraycore import train as exported_train

    assert (evaluate, calibrate, exported_train) == (evaluate_folder, calibrate_folder, train)


def test_an_unknown_name_is_an_attribute_error_and_subpackages_still_import() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        xraycore.no_such_thing  # noqa: B018
    from xraycore import metrics  # a subpackage, not an exported name: Python imports it

    assert metrics.__name__ == "xraycore.metrics"


def test_importing_xraycore_pulls_in_no_torch_and_no_heavy_library() -> None:
    heavy = ("torch", "timm", "numpy", "PIL", "streamlit", "sklearn", "scipy", "onnxruntime", "pydicom")
    code = ("import sys, xraycore; "
            f"print(','.join(name for name in {heavy!r} if name in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "", f"import xraycore pulled in {found.stdout.strip()}"
