"""The Site page (AppTest): the reads so far with Cohen's kappa, the keep-films setting, adapting on a labelled
folder with the cross-fitted figures before and after, activation, roll back and removal; admins act, researchers preview,
readers are refused."""
from __future__ import annotations

import numpy as np
import pytest

from tests.app.test_access_app import env, refused, run  # noqa: F401 - the signed-in fixtures of the app tests
from tests.app.test_app import app_env, runs_root  # noqa: F401
from tests.helpers.sites import site_sample
from xraycore.access import policy as access
from xraycore.clinical import operating_points as operating
from xraycore.clinical import site_reads
from xraycore.store.database import open_store

FACTS = {"model_name": "run-a", "model_version": "1", "weights_sha256": "ab" * 32, "operating_point": "internal",
         "probability": 0.8, "ai_call": "PNEUMONIA"}
READERS = [access.Identity("Rita Reader", "rita@ward.example", frozenset({access.READER})),
           access.Identity("Rob Reader", "rob@ward.example", frozenset({access.READER}))]


@pytest.fixture
def store_url(env, tmp_path, monkeypatch) -> str:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'site.db'}"
    monkeypatch.setenv("XRAY_DB_URL", url)
    return url


def test_the_reads_so_far_with_kappa_and_who_may_act(store_url):
    store = open_store(store_url)
    films = [np.full((8, 8), value, np.uint8) for value in (10, 20, 30, 40)]
    for reader, reads in zip(READERS, (["PNEUMONIA", "PNEUMONIA", "NORMAL", "NORMAL"],
                                       ["PNEUMONIA", "NORMAL", "NORMAL", "NORMAL"])):
        for film, read in zip(films, reads):
            site_reads.record_read(store, FACTS, read, reader, classes=["NORMAL", "PNEUMONIA"], film_pixels=film)
    at = run("pages/site.py", "admin")
    assert {metric.label: metric.value for metric in at.metric} == {"Reads": "8", "Films": "4",
                                                                    "Agree with the model": "37.5%"}
    kappa = next(frame.value for frame in at.dataframe if "Cohen's kappa" in frame.value.columns)
    assert kappa["Cohen's kappa"].tolist() == ["0.500"] and kappa["films read by both"].tolist() == [4]
    assert not at.toggle(key="keep_films").disabled  # the admin may change it

    preview = run("pages/site.py", "researcher")
    assert any("Research preview" in info.value for info in preview.info)
    assert preview.toggle(key="keep_films").disabled and preview.button(key="site_adapt").disabled
    assert preview.button(key="site_roll_back").disabled and preview.button(key="site_activate").disabled
    assert refused(run("pages/site.py", "reader"))


def test_an_admin_adapts_on_a_folder_sees_before_and_after_and_rolls_back(store_url, app_env, tmp_path):  # noqa: F811
    model = app_env / "run-a"
    (model / "ood.safetensors").unlink()  # the tiny network flags many synthetic films as out of domain
    sample = site_sample(tmp_path / "site")
    at = run("pages/site.py", "admin")
    at.radio(key="site_source").set_value("a folder of class sub-folders").run()
    at.text_input(key="site_folder").set_value(str(sample))
    at.text_input(key="site_name").set_value("ward-7")
    at.selectbox(key="site_method").set_value("head").run()
    epochs = at.number_input(key="site_epochs")
    assert epochs.value is None and epochs.proto.placeholder == "10", "empty: the method's default, shown"
    at.button(key="site_adapt").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.success] == ["Adapted and active: ward-7."], [e.value for e in at.error]
    assert operating.active_name(model) == "ward-7"
    profiles = next(frame.value for frame in at.dataframe if "profile" in frame.value.columns)
    assert profiles["profile"].tolist() == ["ward-7"] and profiles["active"].tolist() == ["yes"]
    assert all("→" in value for value in profiles["auroc (before → after)"])
    assert profiles["recipe"].tolist() == ["10 epochs, erasing views"], "head has no map: no band penalty"

    at.button(key="site_roll_back").click().run()
    assert [s.value for s in at.success] == ["Rolled back: internal is in use again."]
    assert operating.active_name(model) == operating.INTERNAL

    at.selectbox(key="site_activate_pick").set_value("ward-7").run()
    at.button(key="site_remove").click().run()
    assert [s.value for s in at.success] == ["ward-7 was removed."], [e.value for e in at.error]
    assert "ward-7" not in operating.names(model) and not (model / "sites" / "ward-7").exists()
    assert not any("profile" in frame.value.columns for frame in at.dataframe), "the profile list is empty again"
