"""Rolling back undoes the latest change of the active point (a save that did not activate is no change), is
refused to a reader inside xraycore, and is audited like any activation."""
from __future__ import annotations

import shutil

import pytest

from xraycore.access import policy as access
from xraycore.clinical import operating_points as operating
from xraycore.clinical import point_history

ADMIN = access.Identity("Ada Admin", "ada@it.example", frozenset({access.ADMIN}))
READER = access.Identity("Rita Reader", "rita@ward.example", frozenset({access.READER}))


@pytest.fixture
def model(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "model")


def test_roll_back_returns_to_the_point_in_use_before_the_last_change(model, log):
    assert point_history.previous_active(model) is None
    operating.save(model, "ward-a", {"threshold": 0.3, "temperature": 1.0}, identity=ADMIN)
    operating.save(model, "ward-b", {"threshold": 0.6, "temperature": 1.0}, activate=False, identity=ADMIN)
    assert point_history.previous_active(model) == operating.INTERNAL  # ward-b was saved, not activated
    assert point_history.roll_back(model, identity=ADMIN) == operating.INTERNAL
    assert operating.active_name(model) == operating.INTERNAL
    assert point_history.roll_back(model, identity=ADMIN) == "ward-a"  # rolling back the roll-back
    assert operating.active_name(model) == "ward-a"
    assert log.read_text().count('"operating_point.activate"') == 2


def test_a_reader_may_not_roll_back(model, log):
    operating.save(model, "ward-a", {"threshold": 0.3, "temperature": 1.0}, identity=ADMIN)
    with pytest.raises(access.AccessDenied):
        point_history.roll_back(model, identity=READER)
    assert operating.active_name(model) == "ward-a"
    assert '"refused"' in log.read_text()
