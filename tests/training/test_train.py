"""The training loop's pieces: schedules (timm.scheduler), phases, config checks, and what a finished run holds."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xraycore import models
from xraycore.models.registry import REGISTRY
from xraycore.runs import directory as runs
from xraycore.common.tensor_files import load_arrays, load_weights
from xraycore.training.config import TrainConfig
from xraycore.ood.distance import fit_ood
from xraycore.training.optimisation import backbone_frozen, make_scheduler, phase_lr, set_phase


def test_config_refuses_unknown_and_bad_options():
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"lr": 1e-3, "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="val fraction"):
        TrainConfig(val_fraction=1.5)
    with pytest.raises(ValueError, match="EMA decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="mixup and cutmix"):
        TrainConfig(cutmix=-1.0)
    with pytest.raises(ValueError, match="batch size must be even"):
        TrainConfig(mixup=0.2, batch_size=33)


def scheduled_lrs(config: TrainConfig, steps: int, epochs: range) -> list[float]:
    """The learning rate of every step of ``epochs``, stepped as the loop does: a scheduler per epoch, then
    ``step_update(epoch * steps + step)`` before each step."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    seen = []
    for epoch in epochs:
        scheduler = make_scheduler(config, optimizer, phase_lr(config, epoch), steps)
        for step in range(steps):
            if scheduler is not None:
                scheduler.step_update(epoch * steps + step)
            seen.append(optimizer.param_groups[0]["lr"])
    return seen


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    config = TrainConfig(schedule="cosine", epochs=10, warmup_fraction=0.1, lr=1e-3)
    lrs = scheduled_lrs(config, 10, range(10))  # 100 steps: 10 of warm-up, 90 of cosine decay
    assert lrs[0] == pytest.approx(1e-4), "step 0: the base rate over the warm-up steps"
    assert lrs[10] == pytest.approx(1e-3), "the end of the warm-up: the base rate"
    assert lrs[99] == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 89 / 90))), "the last step: almost 0"
    assert lrs[:11] == sorted(lrs[:11]) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_a_resumed_run_continues_the_schedule_where_it_stopped():
    """Resuming at epoch 4 builds its scheduler afresh: the rates must be the uninterrupted run's."""
    for config in (TrainConfig(schedule="cosine", epochs=6, lr=1e-3), TrainConfig(schedule="exponential", epochs=6),
                   TrainConfig(frozen_epochs=2, finetune_lr=1e-5, schedule="cosine", epochs=6)):
        assert scheduled_lrs(config, 7, range(4, 6)) == scheduled_lrs(config, 7, range(6))[4 * 7:]


def test_exponential_schedule_is_per_epoch_and_none_is_constant():
    lrs = scheduled_lrs(TrainConfig(schedule="exponential", gamma=0.5, lr=1e-3), 4, range(3))
    assert lrs == pytest.approx([1e-3] * 4 + [0.5e-3] * 4 + [0.25e-3] * 4)
    assert scheduled_lrs(TrainConfig(lr=1e-3), 4, range(3)) == [1e-3] * 12


def test_two_phase_transfer_freezes_then_unfreezes_all_but_batchnorm():
    config = TrainConfig(backbone="resnet18", frozen_epochs=2, epochs=3, lr=1e-3, finetune_lr=1e-5)
    model, _ = models.build_model("resnet18", 2)
    set_phase(model, config, 0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"} and backbone_frozen(config, 1)
    assert phase_lr(config, 1) == 1e-3 and phase_lr(config, 2) == 1e-5
    set_phase(model, config, 2)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not p.requires_grad for m in bn for p in m.parameters()) and all(not m.training for m in bn)
    assert model.conv1.weight.requires_grad and model.layer4[0].conv1.weight.requires_grad


def test_frozen_for_the_whole_run_when_unfreeze_is_off():
    config = TrainConfig(frozen_epochs=10, unfreeze=False, epochs=10)
    assert all(backbone_frozen(config, e) for e in range(10))
    config = TrainConfig(frozen_epochs=3, unfreeze=True, epochs=4)
    assert [backbone_frozen(config, e) for e in range(4)] == [True, True, True, False]


def test_ood_flags_far_points_and_about_one_percent_of_in_domain():
    rng = np.random.default_rng(0)
    train, held_out = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    ood = fit_ood(train, held_out, quantile=0.99)
    assert 0.0 <= ood.is_out_of_domain(rng.normal(size=(4000, 8))).mean() < 0.03
    assert ood.is_out_of_domain(rng.normal(loc=4.0, size=(100, 8))).all()


def test_ood_blocks_each_catch_a_shift_the_others_do_not_see():
    """Two feature blocks: a shift confined to the first (an early layer) is flagged although the second
    (the pre-logit features) looks in-domain; the saved arrays load back to the same scores."""
    rng = np.random.default_rng(1)
    train, held_out = rng.normal(size=(2000, 12)), rng.normal(size=(2000, 12))
    ood = fit_ood(train, held_out, quantile=0.99, widths=[4, 8])
    assert ood.widths == [4, 8]
    shifted_early = rng.normal(size=(200, 12))
    shifted_early[:, :4] += 3.0
    assert ood.is_out_of_domain(shifted_early).mean() > 0.95
    assert ood.is_out_of_domain(rng.normal(size=(4000, 12))).mean() < 0.03
    from xraycore.ood.distance import OodModel

    restored = OodModel.from_arrays(ood.to_arrays())
    np.testing.assert_allclose(restored.score(shifted_early), ood.score(shifted_early), rtol=1e-4)
    with pytest.raises(ValueError, match="expected 12 features"):
        ood.score(np.zeros((1, 5)))


def test_ood_score_sums_only_the_scored_blocks_and_keeps_that_choice_when_saved():
    """A shift confined to a block left out of the score is not flagged; the same fitted blocks re-scored on
    every block flag it; the choice and its threshold survive the saved arrays; a file written before the
    choice existed scores every block."""
    rng = np.random.default_rng(2)
    train, held_out = rng.normal(size=(2000, 12)), rng.normal(size=(2000, 12))
    ood = fit_ood(train, held_out, quantile=0.99, widths=[4, 8], scored=[1])
    assert ood.scored == (1,)
    shifted_first = rng.normal(size=(200, 12))
    shifted_first[:, :4] += 3.0
    assert ood.is_out_of_domain(shifted_first).mean() < 0.05
    assert ood.is_out_of_domain(rng.normal(size=(4000, 12))).mean() < 0.03
    every = ood.with_scored_blocks(held_out, None)
    assert every.is_out_of_domain(shifted_first).mean() > 0.95 and every.threshold > ood.threshold
    from xraycore.ood.distance import OodModel

    restored = OodModel.from_arrays(ood.to_arrays())
    assert restored.scored == (1,) and restored.threshold == pytest.approx(ood.threshold)
    np.testing.assert_allclose(restored.score(shifted_first), ood.score(shifted_first), rtol=1e-4)
    older = {key: value for key, value in every.to_arrays().items() if key != "scored"}
    assert "scored" not in every.to_arrays() and OodModel.from_arrays(older).scored is None
    with pytest.raises(ValueError, match="not a non-empty subset"):
        ood.with_scored_blocks(held_out, [2])


def test_registry_names_the_scored_out_of_domain_blocks_by_layer():
    assert models.ood_scored_blocks("mobilenetv2_100") == [1, 2]  # blocks.3, blocks.5 of blocks.1/3/5 + pre-logits
    assert models.ood_scored_blocks("tf_efficientnet_lite0") == [1, 2]
    assert models.ood_scored_blocks("resnet18") is None  # no choice: every block
    for name in models.list_backbones():  # every entry names only blocks it has (else ValueError)
        scored = models.ood_scored_blocks(name)
        assert scored is None or max(scored) <= len(REGISTRY[name].ood_layers)


def test_ood_features_are_captured_from_the_registry_layers_in_one_forward():
    model, _ = models.build_model("mobilenetv2_100", 2, pretrained="none")
    model.eval()
    with torch.no_grad(), models.OodFeatures(model, "mobilenetv2_100") as captured:
        logits = model(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 2) and len(captured.passes) == 1
    assert captured.widths == [2 * 24, 2 * 64, 2 * 160, 1280]  # mean + std of blocks 1, 3, 5; pre-logits
    assert captured.features().shape == (2, sum(captured.widths))
    with torch.no_grad():
        pre_logits = models.features(model, torch.rand(2, 3, 64, 64))
    assert pre_logits.shape == (2, 1280)


def test_finished_run_holds_everything_the_app_needs(tiny_run):
    run = runs.Run(tiny_run)
    assert run.status()["state"] == "finished"
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "last.safetensors", "train_state.pt",
                 "val_predictions.csv", "operating_point.json", "summary.json", "ood.safetensors", "log.txt"):
        assert (run.path / name).exists(), name
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["train_loss"]) and r["images_per_second"] > 0 for r in rows)
    config = run.config
    assert config["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert config["weights_source"].startswith("random initialisation")
    assert config["environment"]["device"] == models.pick_device().type  # cuda, mps or cpu: whatever is here
    val = run.predictions("val")
    assert len(val["file"]) == config["counts"]["val"] > 0
    # patient-grouped split: no patient in both training and validation, patients read from Kermany's names
    # here (person<N>_..., IM-<N>-...), not through the code under test
    def patient(path: str) -> str:
        return re.match(r"(person\d+|IM-\d+)[-_]", Path(path).name).group(1)

    data = Path(config["train"]["data"])
    every = {str(path.resolve()) for path in data.glob("train/*/*.jpeg")} or {str(p.resolve()) for p in data.glob("*/*.jpeg")}
    val_files = {str(Path(path).resolve()) for path in val["file"]}
    train_patients = {patient(path) for path in every - val_files}
    val_patients = {patient(path) for path in val_files}
    assert len(every - val_files) == config["counts"]["train"] and val_patients and train_patients
    assert val_patients.isdisjoint(train_patients), sorted(val_patients & train_patients)
    test = run.predictions("test")
    assert test is not None and len(test["file"]) == config["counts"]["test"] == 32
    op = run.operating_point
    assert 0.0 <= op["threshold"] <= 1.0 and op["positive_class"] == "PNEUMONIA" and op["temperature"] > 0
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["test"]["n"] == 32 and summary["test"]["auroc"] > 0.8  # the task is easy: it must learn it


def test_watch_data_is_scored_every_epoch_and_never_trained_on(tiny_dataset, tmp_path):
    from xraycore.training.loop import train

    config = TrainConfig(data=str(tiny_dataset / "train"), watch_data=str(tiny_dataset / "test"), backbone="simple_cnn",
                         pretrained="none", image_size=32, epochs=2, batch_size=8, val_fraction=0.25, fit_ood=False,
                         out=str(tmp_path), monitor="watch_auroc")
    run = runs.Run(train(config))
    rows = run.metrics()
    assert all(0.0 <= row["watch_auroc"] <= 1.0 and 0.0 <= row["watch_accuracy"] <= 1.0 for row in rows)
    assert run.config["counts"]["train"] + run.config["counts"]["val"] == 32, "the watched images are not in training"
    with pytest.raises(ValueError, match="needs --watch-data"):
        TrainConfig(monitor="watch_auroc")


def test_split_seed_keeps_the_validation_split_while_the_training_seed_changes(tiny_dataset):
    """Ensemble members trained with different seeds must share their validation images."""
    from xraycore.training.run_data import prepare_data

    def val_files(**seeds) -> list[str]:
        splits = prepare_data(TrainConfig(data=str(tiny_dataset / "train"), image_size=32, val_fraction=0.25, **seeds))
        return sorted(splits.cache.samples[i].path for i in splits.val)

    assert val_files(seed=1, split_seed=0) == val_files(seed=0)
    assert val_files(seed=1) != val_files(seed=0) or val_files(seed=2) != val_files(seed=0)


def test_status_reports_batches_speed_and_time_left_and_a_stop_within_the_batch(tiny_dataset, tmp_path):
    """What the Train page reads while a run trains: the epoch count from the start, batch k of n with images/s
    and time left during an epoch, and 'stopping' written in the very batch the STOP file was seen."""
    from xraycore.runs.directory import STOP_FILE
    from xraycore.training.loop import train

    config = TrainConfig(data=str(tiny_dataset / "train"), backbone="simple_cnn", pretrained="none", image_size=32,
                         epochs=3, batch_size=8, val_fraction=0.25, fit_ood=False, out=str(tmp_path))
    seen: dict[str, dict] = {}
    batches_after_stop: list[tuple[int, int]] = []
    run_path: list[Path] = []

    def watch(event: dict) -> None:
        if event["kind"] == "start":
            run_path.append(Path(event["run"]))
            seen["start"] = runs.Run(run_path[0]).status()
        elif event["kind"] == "batch":
            if seen.get("asked"):  # the trainer removes the STOP file once heard: the test remembers it asked
                batches_after_stop.append((event["epoch"], event["step"]))
            seen[f"{event['epoch']}.{event['step']}"] = runs.Run(run_path[0]).status()  # written after the batch before
            if (event["epoch"], event["step"]) == (2, 2):
                (run_path[0] / STOP_FILE).touch()
                seen["asked"] = {}
        elif event["kind"] == "message" and "scoring" in event["text"] and run_path:
            seen["scoring"] = runs.Run(run_path[0]).status()

    run = runs.Run(train(config, progress=watch))
    assert seen["start"]["epochs"] == 3 and seen["start"]["progress"]["batches"] == 3, "no 'epoch 0 of ?'"
    during = seen["1.2"]["progress"]
    assert (during["epoch"], during["batch"], during["batches"]) == (1, 1, 3)
    rate, left = during["images_per_second"], during["seconds_left"]
    assert rate > 0 and left > 0, "speed and time left are reported"
    assert seen["2.1"]["epoch"] == 1 and seen["2.1"]["progress"]["epoch"] == 2
    assert batches_after_stop == [], "no batch after the one that saw the STOP file"
    stopping = seen["scoring"]
    assert stopping["state"] == "running" and stopping["progress"]["phase"] == "stopping"
    assert (stopping["progress"]["epoch"], stopping["progress"]["batch"]) == (2, 2)
    assert "stop requested" in stopping["message"]
    assert run.status()["state"] == "stopped" and [row["epoch"] for row in run.metrics()] == [1]
    assert not (run.path / STOP_FILE).exists(), "the request was heard: no STOP file stays behind"


def assert_resumes_exactly(settings: dict, tmp_path: Path, run_id: str, kept: dict[str, torch.Tensor]) -> None:
    """A run of ``settings`` stopped at the first batch of epoch 2 and continued ends on ``kept``, the
    weights an uninterrupted run kept."""
    from xraycore.runs.directory import STOP_FILE
    from xraycore.training.loop import resume, train

    def ask_to_stop_in_epoch_2(event: dict) -> None:
        if event["kind"] == "batch" and event["epoch"] == 2 and event["step"] == 1:
            (tmp_path / "stopped" / run_id / STOP_FILE).touch()

    stopped = runs.Run(train(TrainConfig(**settings, out=str(tmp_path / "stopped")), progress=ask_to_stop_in_epoch_2,
                             run_id=run_id))
    assert stopped.status()["state"] == "stopped"
    resume(run_id, root=tmp_path / "stopped")
    assert stopped.status()["state"] == "finished"
    resumed = load_weights(stopped.path / runs.LAST_WEIGHTS_FILE)
    for name, tensor in kept.items():
        torch.testing.assert_close(resumed[name], tensor, atol=1e-5, rtol=0, msg=name)


def test_ema_keeps_the_moving_average_and_a_stopped_run_resumes_it_exactly(tiny_dataset, tmp_path):
    """--ema-decay: what is validated, kept and shipped is the weights' moving average, and a run stopped in
    epoch 2 and continued ends on exactly the average of an uninterrupted run."""
    from xraycore.training.loop import train

    settings = dict(data=str(tiny_dataset / "train"), backbone="simple_cnn", pretrained="none", image_size=32,
                    epochs=3, batch_size=8, val_fraction=0.25, fit_ood=False, lr=3e-3, ema_decay=0.9)
    reference = runs.Run(train(TrainConfig(**settings, out=str(tmp_path / "reference"))))
    state = torch.load(reference.path / runs.CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    kept = load_weights(reference.path / runs.LAST_WEIGHTS_FILE)
    assert all(torch.equal(kept[name], state["ema"][name]) for name in kept), "the average is what is kept"
    assert any(not torch.equal(state["ema"][name], state["model"][name]) for name in kept
               if state["model"][name].is_floating_point()), "the average is not the raw weights"
    assert_resumes_exactly(settings, tmp_path, "ema", kept)


def test_soft_target_loss_weights_classes_as_the_hard_label_loss_does():
    """One-hot targets give exactly F.cross_entropy (plain and class-weighted); a 50/50 target is the mean of
    the two hard losses when the classes weigh the same."""
    from xraycore.training.optimisation import soft_target_cross_entropy

    logits, labels = torch.randn(6, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 1, 0, 1, 1])
    one_hot = torch.nn.functional.one_hot(labels, 2).float()
    weights = torch.tensor([2.9, 1.0])
    torch.testing.assert_close(soft_target_cross_entropy(logits, one_hot), F.cross_entropy(logits, labels))
    torch.testing.assert_close(soft_target_cross_entropy(logits, one_hot, weights),
                               F.cross_entropy(logits, labels, weight=weights))
    half = torch.full((6, 2), 0.5)
    expected = (F.cross_entropy(logits, torch.zeros(6, dtype=torch.long))
                + F.cross_entropy(logits, torch.ones(6, dtype=torch.long))) / 2
    torch.testing.assert_close(soft_target_cross_entropy(logits, half), expected)


def test_mixup_blends_images_and_labels_and_a_stopped_run_resumes_it_exactly(tiny_dataset, tmp_path):
    """--mixup / --cutmix: a batch comes out blended with soft targets (label smoothing applied once, by the
    mixer); a run stopped in epoch 2 and continued ends on the weights of an uninterrupted one (the mixer's
    draws are seeded per epoch), and those differ from the same run without mixing."""
    from xraycore.training.optimisation import make_mixing
    from xraycore.training.loop import train

    assert make_mixing(TrainConfig(), 2) is None
    mixer = make_mixing(TrainConfig(mixup=0.4, label_smoothing=0.1), 2)
    images, labels = torch.rand(8, 1, 16, 16), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    np.random.seed(0)  # this draw blends about 60 : 40
    mixed, targets = mixer(images.clone(), labels)
    assert not torch.equal(mixed, images)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(8))
    assert targets.min() >= 0.05 - 1e-6 and ((targets > 0.06) & (targets < 0.94)).any()

    settings = dict(data=str(tiny_dataset / "train"), backbone="simple_cnn", pretrained="none", image_size=32,
                    epochs=3, batch_size=8, val_fraction=0.25, fit_ood=False, lr=3e-3, mixup=0.4, cutmix=1.0)
    reference = runs.Run(train(TrainConfig(**settings, out=str(tmp_path / "reference"))))
    plain = runs.Run(train(TrainConfig(**{**settings, "mixup": 0.0, "cutmix": 0.0}, out=str(tmp_path / "plain"))))
    kept, unmixed = (load_weights(run.path / runs.LAST_WEIGHTS_FILE) for run in (reference, plain))
    assert any(not torch.equal(kept[name], unmixed[name]) for name in kept if kept[name].is_floating_point())
    assert_resumes_exactly(settings, tmp_path, "mix", kept)


def test_discriminator_catches_what_the_distance_misses_and_survives_saving():
    """Films from elsewhere that differ a little along every feature (the distance's threshold lets most pass)
    are flagged once a discriminator has seen some of them; in-domain images stay near 1 - quantile; the saved
    arrays load back to the same ratios; a file without a discriminator reads as before."""
    from xraycore.ood.distance import OodModel, fit_discriminator

    rng = np.random.default_rng(3)
    train, held_out = rng.normal(size=(3000, 16)), rng.normal(size=(2000, 16))
    ood = fit_ood(train, held_out, quantile=0.99, widths=[4, 12])
    direction = np.ones(16)  # one standard deviation along every feature
    elsewhere, new_elsewhere = rng.normal(size=(1000, 16)) + direction, rng.normal(size=(1000, 16)) + direction
    assert ood.is_out_of_domain(new_elsewhere).mean() < 0.5  # the distance alone misses most of them
    discriminator = fit_discriminator(train, elsewhere, held_out, quantile=0.995)
    exposed = ood.with_discriminator(discriminator)
    assert exposed.is_out_of_domain(new_elsewhere).mean() > 0.9
    assert exposed.is_out_of_domain(rng.normal(size=(4000, 16))).mean() < 0.03
    # Either check flags: the ratio is the larger of the two, never below the distance's.
    probe = np.concatenate([new_elsewhere[:50], rng.normal(size=(50, 16))])
    assert np.all(exposed.ratio(probe) >= ood.ratio(probe)) and np.allclose(ood.ratio(probe), ood.score(probe) / ood.threshold)
    restored = OodModel.from_arrays(exposed.to_arrays())
    np.testing.assert_allclose(restored.ratio(probe), exposed.ratio(probe), rtol=1e-4)
    assert OodModel.from_arrays(ood.to_arrays()).discriminator is None
    with pytest.raises(ValueError, match="reads 8 features"):
        ood.with_discriminator(fit_discriminator(train[:, :8], elsewhere[:, :8], held_out[:, :8]))
    with pytest.raises(ValueError, match="at least two"):
        fit_discriminator(train, elsewhere[:1], held_out)


def test_ood_expose_fits_each_network_and_the_predictor_flags_films_from_elsewhere(tiny_run, tiny_dataset, tmp_path):
    """The verb on a trained run: inverted, noisy films stand in for another hospital's; after exposure the
    predictor flags new ones of them, the run's own validation images stay mostly unflagged, the change is
    audited, and a folder that is not the training folder is refused."""
    import shutil

    from PIL import Image

    from xraycore.access import audit
    from xraycore.training import outlier_exposure as exposure
    from xraycore.access.policy import ADMIN, READER, AccessDenied, Identity
    from xraycore.inference.predictor import Predictor

    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)
    rng = np.random.default_rng(4)
    elsewhere = {"fit": tmp_path / "elsewhere", "new": tmp_path / "elsewhere_new"}
    for folder in elsewhere.values():
        folder.mkdir()
        for i, source in enumerate(sorted((tiny_dataset / "test").rglob("*.jpeg"))):
            grey = 255 - np.asarray(Image.open(source).convert("L"), dtype=np.float64)
            noisy = np.clip(grey + rng.normal(0, 25, grey.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"film{i}.png")
    log = tmp_path / "audit.jsonl"
    admin = Identity("admin", "a@x.example", frozenset({ADMIN}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XRAY_AUDIT_LOG", str(log))
        with pytest.raises(AccessDenied):
            exposure.expose(model, tiny_dataset / "train", elsewhere["fit"], identity=Identity("r", "r@x.example", frozenset({READER})))
        with pytest.raises(ValueError, match="validation images"):
            exposure.expose(model, tiny_dataset / "test", elsewhere["fit"], identity=admin)
        before = Predictor(model, device="cpu")
        assert before.networks[0].ood.discriminator is None
        assert before.describe()["ood_check"] == "distance to the training images"
        [report] = exposure.expose(model, tiny_dataset / "train", elsewhere["fit"], processed_share=0.5,
                                   quantile=0.95, identity=admin, say=lambda _: None)
        entries = audit.read(log)
    assert [(e["action"], e["outcome"]) for e in entries][-1] == ("ood_exposure", "ok")
    assert report["flagged_validation"] <= 0.25 and report["n_outliers"] == 32
    predictor = Predictor(model, device="cpu")
    detector = predictor.networks[0].ood
    assert detector.discriminator is not None  # the saved file, as the app loads it
    assert "shown 32 films from elsewhere (elsewhere)" in predictor.describe()["ood_check"]  # Diagnose's sidebar
    new_films = [p for p in predictor.predict_files(sorted(elsewhere["new"].iterdir())) if p.ok]
    assert len(new_films) == 32 and np.mean([p.out_of_domain for p in new_films]) > 0.8
    # The discriminator flags them on its own (the distance does too here: that it catches what the distance
    # misses is shown on features above).
    new_features = exposure.features(predictor.networks[0], predictor, sorted(elsewhere["new"].iterdir()))
    assert np.mean(detector.discriminator.ratio(detector.own_features(new_features)) > 1) > 0.8


def test_ood_expose_feature_cache_scores_each_film_once(tiny_run, tiny_dataset, tmp_path, monkeypatch):
    """--cache-dir: a second exposure of the same weights scores nothing again and fits the same detector; a
    changed file is scored again, alone; an unreadable one is skipped each time and never stored; another
    processing, or changed reading code, is scored afresh."""
    import shutil

    from PIL import Image

    from xraycore.training import outlier_exposure as exposure
    from xraycore.inference.predictor import Predictor

    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for i, source in enumerate(sorted((tiny_dataset / "test").rglob("*.jpeg"))[:12]):
        Image.fromarray(255 - np.asarray(Image.open(source).convert("L"))).save(elsewhere / f"film{i}.png")
    (elsewhere / "broken.png").write_bytes(b"not an image")
    scored: list[list[str]] = []  # the files of each call that scores
    real = exposure._scored
    monkeypatch.setattr(exposure, "_scored", lambda network, predictor, paths, *rest: scored.append(
        [Path(p).name for p in paths]) or real(network, predictor, paths, *rest))
    cache = tmp_path / "cache"

    def fit() -> dict:
        shutil.copy(tiny_run / "ood.safetensors", model / "ood.safetensors")  # the same detector to start from
        [report] = exposure.fit_exposure(model, tiny_dataset / "train", elsewhere, processed_share=0.5, quantile=0.95,
                                         cache_dir=cache, say=lambda _: None)
        return report

    first = fit()
    assert sum(map(len, scored)) > 100 and first["n_outliers"] == 13  # the broken file is listed, skipped when scored
    scored.clear()
    second = fit()
    assert scored and all(names == ["broken.png"] for names in scored), "only the unreadable file is tried again"
    assert {k: v for k, v in second.items() if k != "date"} == {k: v for k, v in first.items() if k != "date"}

    predictor = Predictor(model, device="cpu")
    network, films = predictor.networks[0], sorted(elsewhere.glob("film*.png"))
    store = exposure.FeatureCache(cache)
    without = exposure.features(network, predictor, films)
    np.testing.assert_allclose(exposure.features(network, predictor, films, cache=store), without, rtol=1e-6)
    Image.fromarray(np.asarray(Image.open(films[0]))[:, ::-1]).save(films[0])  # a changed film
    os.utime(films[0], ns=(1, 1))
    scored.clear()
    changed = exposure.features(network, predictor, films, cache=store)
    assert scored == [["film0.png"]] and changed.shape == without.shape and not np.allclose(changed[0], without[0])
    np.testing.assert_allclose(changed[1:], without[1:], rtol=1e-6)
    monkeypatch.setattr(exposure, "_reading_code_digest", lambda: "films are read another way now")
    scored.clear()
    exposure.features(network, predictor, films[:2], cache=store)
    assert scored == [[film.name for film in films[:2]]], "an edit to the reading code starts afresh"
    fresh = exposure.FeatureCache(tmp_path / "fresh")
    exposure.features(network, predictor, films[:3], cache=fresh)
    scored.clear()
    exposure.features(network, predictor, films[:3], "blurred", cache=fresh)
    assert scored == [[film.name for film in films[:3]]], "another processing is another entry"


def test_training_with_outliers_exposes_its_own_run(tiny_dataset, tmp_path):
    """--ood-outliers: the finished run's detector carries a discriminator, and its summary says what it saw."""
    import shutil

    from PIL import Image

    from xraycore.runs import directory as runs
    from xraycore.training.config import TrainConfig
    from xraycore.ood.distance import OodModel
    from xraycore.training.loop import train

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 48), dtype=np.uint8)).save(elsewhere / f"{i}.png")
    run = train(TrainConfig(data=str(tiny_dataset), backbone="simple_cnn", pretrained="none", image_size=48, epochs=1,
                            batch_size=8, val_fraction=0.25, out=str(tmp_path / "runs"), ood_outliers=str(elsewhere)))
    detector = OodModel.from_arrays(load_arrays(run / runs.OOD_FILE))
    assert detector.discriminator is not None
    exposure = runs.Run(run).read_json(runs.SUMMARY_FILE)["ood_exposure"]
    assert exposure["outliers"] == "elsewhere" and exposure["n_outliers"] == 12
    # An exposure that cannot be done leaves the finished run finished, with its distance check alone.
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(elsewhere / "0.png", lonely / "0.png")
    kept = train(TrainConfig(data=str(tiny_dataset), backbone="simple_cnn", pretrained="none", image_size=48, epochs=1,
                             batch_size=8, val_fraction=0.25, out=str(tmp_path / "runs"), ood_outliers=str(lonely)))
    assert runs.Run(kept).status()["state"] == "finished"
    assert OodModel.from_arrays(load_arrays(kept / runs.OOD_FILE)).discriminator is None
    assert "out-of-domain exposure not done" in (kept / runs.LOG_FILE).read_text()
    with pytest.raises(ValueError, match="is not a folder"):  # before any training, not after it
        train(TrainConfig(data=str(tiny_dataset), backbone="simple_cnn", pretrained="none", image_size=48,
                          out=str(tmp_path / "never"), ood_outliers=str(tmp_path / "missing")))
    assert not (tmp_path / "never").exists()
