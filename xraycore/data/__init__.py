"""Training data, from folders on disk to batches on the device, one module per job:

    folders   class folders, patient ids, byte-identical duplicates, split folders  ->  list[Sample]
    splits    ratio split and k folds that never share a patient, class weights, minority growth, subsets
    decode    file -> uint8 grey at the load size; intensity / crop preparation, JPEG-quality matching,
              network_input (the numpy network input prediction uses on either backend)
    cache     ImageCache: every image decoded once (optionally kept on disk), unreadable files counted by reason
    augment   the augmentation options (kornia, batched on the training device) and BatchAugmentation
    dataset   XrayDataset over the cache, to_network_input, training_input
    build     dataset folders made from others (pooled classes, Kermany in three classes)

Nothing here knows about models or the UI: a model's input size and mean/std are passed in. folders,
splits, decode, cache and build import no torch (serving installs have none); only augment and dataset
do. The names below are importable from here too (``from xraycore import data; data.ImageCache``); each is
imported from its module on first use, so importing this package costs nothing and pulls in no torch.
"""
from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "folders": ("IMAGE_SUFFIXES", "DEFAULT_PATIENT_PATTERN", "SPLIT_FOLDER_NAMES", "Sample", "patient_id",
                "is_image_file", "list_images", "scan_class_folders", "discover_splits", "find_duplicate_files",
                "merge_duplicate_groups"),
    "splits": ("split_by_ratio", "kfold_splits", "class_weights", "grow_minority", "subsample"),
    "decode": ("IMAGENET_MEAN", "IMAGENET_STD", "INTENSITY_NORMALISATIONS", "decode_to_uint8", "resize_uint8",
               "prepare_grey", "crop_margin", "normalise_intensity", "stored_jpeg_quality", "match_stored_encoding",
               "fit_within", "network_input"),
    "cache": ("ImageCache",),
    "build": ("merge_class_folders", "build_kermany_3class", "place_class_files"),
    "augment": ("AUGMENTATIONS", "BatchAugmentation", "build_augmentation"),
    "dataset": ("XrayDataset", "to_network_input", "training_input"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
