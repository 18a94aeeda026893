"""Site adaptation's torch side: where each method cuts a network, the cached views, a fit that changes only the
tail and leaves the original untouched, and the delta laid back over the weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xraycore import models
from xraycore.training import adaptation

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _network(backbone: str = "simple_cnn") -> torch.nn.Module:
    torch.manual_seed(0)
    model, _ = models.build_model(backbone, 2, pretrained="none")
    return model.eval()


def _films(n: int = 24, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Grey films whose class is their brightness: something a tail can learn."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    greys = np.clip(rng.normal(90 + 80 * labels[:, None, None], 20, (n, size, size)), 0, 255).astype(np.uint8)
    return greys, labels


@pytest.mark.parametrize("method, owned", [("head", ("classifier.",)), ("last-stage", ("features.3.", "classifier.")),
                                           ("last-two-blocks", ("features.2.", "features.3.", "classifier.")),
                                           ("full", ("",))])
def test_each_method_cuts_where_it_says_and_the_halves_make_the_network(method, owned):
    model = _network()
    split = adaptation.split_network(model, method)
    assert split.prefixes == owned
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(split.tail(split.trunk(x)), model(x), atol=1e-5)


@pytest.mark.parametrize("method, owned", [("last-stage", ("blocks.6.", "conv_head.", "bn2.", "classifier.")),
                                           ("last-two-blocks", ("blocks.5.2.", "blocks.6.", "conv_head.", "bn2.",
                                                                "classifier."))])
def test_timm_efficientnets_cut_before_their_last_stage_or_the_block_before_it(method, owned):
    model = _network("mobilenetv2_100")
    split = adaptation.split_network(model, method)
    assert split.prefixes == owned
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(split.tail(split.trunk(x)), model(x), atol=1e-4)


def test_unknown_method_is_one_sentence():
    with pytest.raises(ValueError, match="Unknown adaptation method"):
        adaptation.split_network(_network(), "everything")


def test_clean_view_is_the_predictors_input_and_augmented_views_differ():
    greys, _ = _films(4)
    views = adaptation.grey_views(greys, ["hflip", {"name": "brightness_contrast", "brightness": 0.3}], 3, 32)
    assert views.shape == (4, 3, 1, 32, 32)
    assert torch.allclose(views[:, 0, 0], torch.from_numpy(greys).float() / 255)
    assert not torch.allclose(views[:, 1], views[:, 0])


@pytest.mark.parametrize("method", ["head", "last-stage", "last-two-blocks", "full"])
def test_a_fit_changes_only_the_tail_learns_and_leaves_the_original_untouched(method):
    model = _network()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    greys, labels = _films()
    views = adaptation.grey_views(greys, ["hflip"], 2, 32)
    device = torch.device("cpu")
    cached = adaptation.cache_views(model, method, views, MEAN, STD, device)
    original = adaptation.tail_logits(model, method, cached, {}, mean=MEAN, std=STD, device=device)
    delta = adaptation.fit_tail(model, method, cached, labels, epochs=30, mean=MEAN, std=STD, device=device,
                                learning_rate=3e-2 if method == "head" else 3e-3)
    assert delta and all(name.startswith(adaptation.split_network(model, method).prefixes) for name in delta)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    adapted = adaptation.tail_logits(model, method, cached, delta, mean=MEAN, std=STD, device=device)
    accuracy = lambda logits: float(np.mean(logits.argmax(1) == labels))  # noqa: E731
    assert accuracy(adapted) == 1.0 and accuracy(adapted) > accuracy(original)
    with torch.no_grad():  # the delta laid over a fresh copy answers as the fitted tail did
        normal = adaptation.normaliser(MEAN, STD)(views[:, 0])
        assert np.allclose(adaptation.with_delta(model, delta)(normal).numpy(), adapted, atol=1e-4)


def _last_stage_fit_inputs() -> tuple[torch.nn.Module, torch.Tensor, np.ndarray, torch.device]:
    """The toy network, its last stage's cached views of the toy films (two per film), their labels, the CPU."""
    model = _network()
    greys, labels = _films()
    device = torch.device("cpu")
    cached = adaptation.cache_views(model, "last-stage", adaptation.grey_views(greys, ["hflip"], 2, 32), MEAN, STD,
                                    device)
    return model, cached, labels, device


def test_the_anchor_keeps_the_tail_nearer_the_original_weights():
    """L2-SP: with the anchor the fitted tail moves less far from the original tensors than without it."""
    model, cached, labels, device = _last_stage_fit_inputs()
    original = model.state_dict()

    def drift(anchor: float) -> float:
        delta = adaptation.fit_tail(model, "last-stage", cached, labels, epochs=20, mean=MEAN, std=STD, device=device,
                                    learning_rate=3e-3, anchor=anchor)
        return sum(float(((tensor - original[name]) ** 2).sum()) for name, tensor in delta.items()
                   if "running" not in name and "num_batches" not in name)

    free, anchored = drift(0.0), drift(1.0)
    assert 0 < anchored < 0.5 * free, (anchored, free)


def test_a_delta_of_another_network_is_refused():
    with pytest.raises(ValueError, match="do not fit the network"):
        adaptation.apply_delta(_network(), {"classifier.weight": torch.zeros(5, 5)})


def test_band_share_is_the_cam_mass_in_the_outer_band():
    classifier = torch.nn.Linear(1, 2)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0], [-1.0]]))  # class 0's CAM is the map, class 1's is empty
    edge, middle = torch.ones(1, 1, 10, 10), torch.zeros(1, 1, 10, 10)
    edge[..., 2:8, 2:8] = 0
    middle[..., 3:7, 3:7] = 1
    shares = adaptation.band_share(torch.cat([edge, middle]), classifier, 100)
    assert shares[0, 0] > 0.5 and shares[1, 0] < 0.01
    assert torch.all(shares[:, 1] == 0), "an empty map has no mass anywhere"


def test_region_shares_on_the_feature_grid_equal_the_shares_of_the_upsampled_heat_map():
    """The penalties weigh the h x w CAM by each mask's upsampling weights instead of upsampling the CAM on every
    step: the same figure as the heat map Diagnose draws, masked, for any grid and film size."""
    torch.manual_seed(0)
    classifier = torch.nn.Linear(8, 2)
    for grid, size in (((7, 7), 224), ((5, 3), 40), ((8, 8), 8)):
        features = torch.randn(6, 8, *grid)
        masks = torch.rand(6, size, size) > 0.6
        heat_maps = adaptation.class_cams(features, classifier, size)
        by_pixels = (heat_maps * masks.unsqueeze(1)).sum(dim=(-2, -1)) / heat_maps.sum(dim=(-2, -1))
        with torch.no_grad():
            assert torch.allclose(adaptation.region_share(features, classifier, size, masks), by_pixels, atol=1e-5)


def test_the_band_penalty_moves_the_heat_map_off_the_border():
    """Films whose class shows both as a bright frame and, fainter, in the middle: the penalised tail leans on the
    middle."""
    rng = np.random.default_rng(0)
    labels = np.arange(32) % 2
    greys = rng.normal(100, 10, (32, 64, 64))
    greys[labels == 1, :8] += 120  # a bright frame on every positive film: the shortcut
    greys[labels == 1, -8:] += 120
    greys[labels == 1, 24:40, 24:40] += 40  # the real, fainter sign
    greys = np.clip(greys, 0, 255).astype(np.uint8)
    model, device = _network(), torch.device("cpu")
    views = adaptation.grey_views(greys, ["hflip"], 2, 64)
    cached = adaptation.cache_views(model, "last-stage", views, MEAN, STD, device)

    def band_of_fit(penalty: float) -> float:
        delta = adaptation.fit_tail(model, "last-stage", cached, labels, epochs=40, mean=MEAN, std=STD, device=device,
                                    learning_rate=3e-3, band_penalty=penalty, image_size=64)
        adapted = adaptation.with_delta(model, delta).eval()
        split = adaptation.split_network(adapted, "last-stage")
        with torch.no_grad():
            features = split.features(cached[:, 0])
            shares = adaptation.band_share(features, adapted.get_classifier(), 64)
        return float(shares[torch.arange(32), torch.as_tensor(labels)].mean())

    assert band_of_fit(10.0) < band_of_fit(0.0) - 0.05


def test_the_lung_penalty_moves_the_heat_map_into_each_films_lung_fields():
    """The class shows faintly inside a 'lung' square and strongly in a square outside it; the lung masks are given
    per film and view (here the same square), as ``adapt`` gives the estimate of each view. A moderate penalty on the
    pneumonia map (as the lung[pos] recipes of experiments/site_recipes.py) raises its share inside the lungs on every
    data draw tried (0.15 to 0.20 at 0.5) and leaves every map non-empty; a strong one (1.5 here) empties the map
    instead (the ReLU of the CAM then passes no gradient), so the penalty is measured at a moderate weight."""
    labels = np.arange(32) % 2
    greys = np.random.default_rng(1).normal(100, 10, (32, 64, 64))
    greys[labels == 1, 4:20, 44:60] += 120  # the shortcut, outside the lungs
    greys[labels == 1, 24:48, 8:32] += 40  # the real, fainter sign, inside them
    greys = np.clip(greys, 0, 255).astype(np.uint8)
    model, device = _network(), torch.device("cpu")
    views = adaptation.grey_views(greys, [], 2, 64)
    cached = adaptation.cache_views(model, "last-stage", views, MEAN, STD, device)
    lungs = torch.zeros((32, 2, 64, 64), dtype=torch.bool)
    lungs[:, :, 20:52, 4:36] = True
    positive = torch.as_tensor(labels == 1)

    def pneumonia_maps(penalty: float) -> tuple[float, float]:
        """The mean share of the positives' pneumonia maps inside the lungs, and the smallest map's mass."""
        delta = adaptation.fit_tail(model, "last-stage", cached, labels, epochs=40, mean=MEAN, std=STD, device=device,
                                    learning_rate=3e-3, image_size=64, lungs=lungs, lung_penalty=penalty, lung_class=1)
        adapted = adaptation.with_delta(model, delta).eval()
        with torch.no_grad():
            features = adaptation.split_network(adapted, "last-stage").features(cached[:, 0])
            shares = adaptation.region_share(features, adapted.get_classifier(), 64, lungs[:, 0])
            cams = adaptation.class_cams(features, adapted.get_classifier(), 64)
        return float(shares[positive, 1].mean()), float(cams[positive, 1].sum(dim=(-2, -1)).min())

    (free, _), (penalised, smallest) = pneumonia_maps(0.0), pneumonia_maps(0.5)
    assert penalised > free + 0.025, (penalised, free)
    assert smallest > 0, "every positive film keeps a heat map"


def test_the_outside_lung_share_leaves_out_films_without_lung_fields():
    classifier = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        classifier.weight.fill_(1.0)
    features = torch.zeros(2, 1, 4, 4)
    features[:, 0, :, :2] = 1.0  # every film's map lies on its left half
    lungs = torch.zeros(2, 8, 8, dtype=torch.bool)
    lungs[0, :, 4:] = True  # film 0's lungs are the right half; film 1 has none found
    assert float(adaptation.outside_lung_share(features, classifier, 8, lungs)) > 0.9, "film 1 does not dilute it"
    assert float(adaptation.outside_lung_share(features, classifier, 8, torch.zeros_like(lungs))) == 0.0


def test_the_outside_lung_share_of_one_class_is_that_class_maps_alone():
    classifier = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(torch.eye(2))  # class 0's map is channel 0, class 1's is channel 1
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0, :, :2] = 1.0  # class 0 looks at the left half
    features[0, 1, :, 2:] = 1.0  # class 1 at the right half, where the lungs are
    lungs = torch.zeros(1, 8, 8, dtype=torch.bool)
    lungs[0, :, 4:] = True
    shares = [float(adaptation.outside_lung_share(features, classifier, 8, lungs, index)) for index in (0, 1, None)]
    assert shares[0] > 0.9 and shares[1] < 0.1 and abs(shares[2] - (shares[0] + shares[1]) / 2) < 1e-6


def test_band_blanked_views_fill_each_views_band_with_its_own_body_grey():
    views = torch.zeros((2, 3, 1, 20, 20))
    views[..., 4:16, 4:16] = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1, 1)  # each view's body its own grey
    views[1] += 0.1
    blanked = adaptation.band_blanked(views)
    band = torch.from_numpy(adaptation.band_mask((20, 20)))
    for film in range(2):
        for view in range(3):
            body = views[film, view, 0, 10, 10]
            assert torch.allclose(blanked[film, view, 0][band], body)
            assert torch.equal(blanked[film, view, 0][~band], views[film, view, 0][~band])
    assert torch.equal(views[0, 0, 0, 0], torch.zeros(20))  # the input is untouched


def test_weight_averaging_returns_the_mean_of_the_epoch_end_weights(monkeypatch):
    """``average_from``: the delta is the mean of the tail's weights at the end of each averaged epoch, not the
    last weights."""
    model, cached, labels, device = _last_stage_fit_inputs()
    snapshots, real_mean = [], adaptation._running_mean

    def recording_mean(averaged, trained, seen):
        snapshots.append([parameter.detach().clone() for parameter in trained])
        return real_mean(averaged, trained, seen)

    monkeypatch.setattr(adaptation, "_running_mean", recording_mean)
    kwargs = dict(epochs=8, mean=MEAN, std=STD, device=device, learning_rate=3e-3)
    averaged = adaptation.fit_tail(model, "last-stage", cached, labels, average_from=0.5, **kwargs)
    assert len(snapshots) == 4  # epochs 4..7
    last = adaptation.fit_tail(model, "last-stage", cached, labels, **kwargs)
    weights = [name for name in averaged if name.endswith("weight")]
    assert any(not torch.allclose(averaged[name], last[name]) for name in weights)
    trained = [name for name, parameter in model.named_parameters()
               if name.startswith(adaptation.split_network(model, "last-stage").prefixes)]
    for position, name in enumerate(trained):
        expected = torch.stack([snapshot[position] for snapshot in snapshots]).mean(0)
        assert torch.allclose(averaged[name], expected, atol=1e-6), name


def test_label_smoothing_bounds_the_fitted_logits():
    """Smoothed targets keep the fitted logit margins smaller than hard targets on the same films."""
    model, cached, labels, device = _last_stage_fit_inputs()

    def margin(smoothing: float) -> float:
        delta = adaptation.fit_tail(model, "last-stage", cached, labels, epochs=30, mean=MEAN, std=STD,
                                    device=device, learning_rate=3e-3, label_smoothing=smoothing)
        logits = adaptation.tail_logits(model, "last-stage", cached, delta, mean=MEAN, std=STD, device=device)
        return float(np.mean(np.abs(logits[:, 1] - logits[:, 0])))

    assert margin(0.3) < 0.8 * margin(0.0)
