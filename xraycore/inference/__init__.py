"""Films in, Predictions out: the Predictor, model directories, backends, export, self-check.

    display          A scored film as a reader sees it: a Prediction shrunk for a session, probabilities in
                     words, the table
    export           Export a model directory to TorchScript or ONNX, and prove the export answers like
                     PyTorch
    model_directory  Model directories as the Predictor opens them: checked once (every JSON file parses), and
                     resolved into the networks they hold (one, or the members an ensemble.json lists, each
                     with its own temperature)
    networks         The networks of a model directory, loaded on a backend: each with the preprocessing its
                     training used and its out-of-domain detector, and the choice of backend (torch or ONNX
                     Runtime) that runs them
    prediction       What scoring one film gives: the Prediction (the result type the app, the CLI and the
                     reading room show), how a film to score may be handed in (a Source), and what an audit
                     line keeps of a batch
    predictor        The Predictor: a model directory (a run or `models/default`) → a Prediction per image
    provenance       Which model produced a result: name, version and the sha256 of its weights
    read_record      A reader's read of a scored film, recorded: the one call Diagnose, the Worklist and
                     `reads add` make
    samples          The sample scans shipped with the model: what Diagnose offers to try, and what the self-
                     check scores
    selfcheck        Self-check after installing: does this installation give the answers the model was
                     shipped with?
    backends/        see its own index

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "display": ("downscale", "DisplayResult", "for_display", "format_probability", "summary_rows",
        "summary_csv", "rows_to_csv"),
    "export": ("export_model", "export_onnx"),
    "model_directory": ("open_model", "network_config", "network_runs"),
    "networks": ("Engine", "Network", "Adaptation", "load_networks", "choose_backend"),
    "prediction": ("Prediction", "score_counts", "bytes_source"),
    "predictor": ("Predictor", "operating_point_of"),
    "provenance": ("ModelProvenance", "software_version", "weights_sha256", "of_model"),
    "read_record": ("prediction_facts", "record_prediction_read"),
    "samples": ("samples_dir", "sample_images", "sample_label"),
    "selfcheck": ("ReferenceMissing", "Check", "grid", "score", "write_reference", "load_reference", "run",
        "summary"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
