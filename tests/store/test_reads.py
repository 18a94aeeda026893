"""The product's door to reads (issue 29): who may record, correct and delete reads and change the keep-films
setting (checked and audited in xraycore), pixels kept only while the setting is on, and the reads statistics
with Cohen's kappa."""
from __future__ import annotations

import numpy as np
import pytest

from xraycore.access import audit
from xraycore.access import policy as access
from xraycore.clinical import read_stats, site_reads
from xraycore.metrics.agreement import cohen_kappa
from xraycore.store import reads

CLASSES = ["NORMAL", "PNEUMONIA"]
FACTS = {"model_name": "default (mobilenetv2_100)", "model_version": "3", "weights_sha256": "cd" * 32,
         "operating_point": "kermany-site", "probability": 0.91, "ai_call": "PNEUMONIA"}
ADMIN = access.Identity("Ada", "ada@site.org", frozenset({access.ADMIN}))
ANN = access.Identity("Ann", "ann@site.org", frozenset({access.READER}))
BOB = access.Identity("Bob", "bob@site.org", frozenset({access.READER}))


def _film(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)


def _record(store, identity, read="PNEUMONIA", seed=0, **extra) -> int:
    return site_reads.record_read(store, FACTS, read, identity, classes=CLASSES, film_pixels=_film(seed), **extra)


def test_keep_films_off_stores_no_pixels_and_on_stores_them(store, log):
    site_reads.set_keep_films(store, False, ADMIN)
    _record(store, ANN, seed=1)
    assert reads.kept_films(store) == set()
    site_reads.set_keep_films(store, True, ADMIN)
    _record(store, ANN, seed=2)
    np.testing.assert_array_equal(reads.kept_pixels(store, site_reads.film_sha256(_film(2))), _film(2))
    assert [(entry["old"] if "old" in entry else None, entry["new"]) for entry in audit.read(log, action="reads.keep_films")] == [
        (None, "off"), ("off", "on")]
    assert [change["value"] for change in site_reads.keep_films_history(store)] == ["off", "on"]


def test_keep_films_default_is_on_locally_and_off_on_a_network(store):
    assert site_reads.keep_films(store, access.local_identity())
    assert site_reads.keep_films(store, access.terminal_identity())
    assert not site_reads.keep_films(store, ANN)  # signed in: served on a network
    assert not site_reads.keep_films(store, access.anonymous_identity())
    _record(store, ANN)
    assert reads.kept_films(store) == set()


def test_a_reader_is_refused_changing_the_setting_in_xraycore_and_audited(store, log):
    with pytest.raises(access.AccessDenied):
        site_reads.set_keep_films(store, True, ANN)
    refused = audit.read(log, action="reads.keep_films")
    assert [(entry["outcome"], entry["user"]) for entry in refused] == [(audit.REFUSED, "ann@site.org")]
    assert site_reads.keep_films_history(store) == []


def test_anonymous_visitors_may_not_record_reads(store, log):
    with pytest.raises(access.AccessDenied):
        _record(store, access.anonymous_identity())
    assert reads.current_reads(store) == []
    assert [entry["outcome"] for entry in audit.read(log, action="reads.record")] == [audit.REFUSED]


def test_a_read_records_the_model_facts_and_the_reader_and_is_audited_without_a_film(store, log):
    read_id = _record(store, ANN, read="NORMAL", reference="CT", heatmap_on_region=False, site="north")
    row = reads.get_read(store, read_id)
    assert {key: row[key] for key in FACTS} == FACTS
    assert (row["read"], row["agrees"], row["reader"], row["role"], row["reference"], row["site"]) == (
        "NORMAL", False, "ann@site.org", "reader", "CT", "north")
    entry = audit.read(log, action="reads.record")[-1]
    assert entry["outcome"] == audit.OK and entry["target"] == f"read {read_id}" and entry["new"] == "NORMAL"
    with pytest.raises(ValueError, match="A read is one of"):
        _record(store, ANN, read="COVID")


def test_readers_change_only_their_own_reads_admins_any(store, log):
    anns = _record(store, ANN, seed=1)
    with pytest.raises(access.AccessDenied):
        site_reads.correct_read(store, anns, "NORMAL", BOB)
    with pytest.raises(access.AccessDenied):
        site_reads.delete_read(store, anns, BOB)
    assert [row["id"] for row in reads.current_reads(store)] == [anns]
    mine = site_reads.correct_read(store, anns, "NORMAL", ANN, classes=CLASSES)
    admins = site_reads.correct_read(store, mine, "uncertain", ADMIN, classes=CLASSES)
    site_reads.delete_read(store, admins, ADMIN)
    assert reads.current_reads(store) == []
    outcomes = [(entry["action"], entry["outcome"]) for entry in audit.read(log, action="reads")]
    assert outcomes.count(("reads.correct", audit.REFUSED)) == 1 and ("reads.delete", audit.OK) in outcomes


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_equals_sklearn(seed):
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(seed)
    labels = np.array(["NORMAL", "PNEUMONIA", "other", "uncertain"])
    first = list(rng.choice(labels, 40))
    second = [a if rng.random() < 0.6 else rng.choice(labels) for a in first]
    assert cohen_kappa(first, second) == pytest.approx(cohen_kappa_score(first, second), abs=1e-12)


def test_reads_stats_per_class_reader_agreement_and_kappa(store):
    site_reads.set_keep_films(store, False, ADMIN)
    for seed, (ann_read, bob_read) in enumerate([("PNEUMONIA", "PNEUMONIA"), ("NORMAL", "NORMAL"),
                                                 ("PNEUMONIA", "NORMAL"), ("NORMAL", "NORMAL")]):
        _record(store, ANN, ann_read, seed)
        _record(store, BOB, bob_read, seed)
    _record(store, ANN, "PNEUMONIA", seed=9)  # read by one reader only: not in the kappa
    stats = read_stats.reads_stats(store)
    assert stats["reads"] == 9 and stats["films"] == 5
    assert stats["per_class"] == {"PNEUMONIA": 4, "NORMAL": 5}
    assert stats["per_reader"]["ann@site.org"]["agree_with_ai"] == 3
    assert stats["ai_agreement"] == {"compared_with_ai": 9, "agree_with_ai": 4, "ai_agreement_rate": 4 / 9}
    expected = cohen_kappa(["PNEUMONIA", "NORMAL", "PNEUMONIA", "NORMAL"], ["PNEUMONIA", "NORMAL", "NORMAL", "NORMAL"])
    assert stats["kappa"] == [{"readers": ["ann@site.org", "bob@site.org"], "films": 4, "kappa": round(expected, 4)}]
    assert expected == pytest.approx(0.5)
