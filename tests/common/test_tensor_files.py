"""Weights files: safetensors round trips (views, tied storage) and the safe loader that refuses hostile pickles."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from xraycore.common.tensor_files import load_weights, save_weights


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_safetensors_roundtrip_with_views_and_shared_storage(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {"weight": base, "tied": base, "transposed": base.t(), "count": torch.tensor(5)}
    path = tmp_path / "model.safetensors"
    save_weights(path, state, metadata={"backbone": "resnet18"})
    loaded = load_weights(path)
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor)
    assert _leftovers(tmp_path) == []


def test_plain_torch_state_dict_and_checkpoint_are_loaded(tmp_path):
    state = {"fc.weight": torch.randn(2, 3), "fc.bias": torch.zeros(2)}
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"epoch": 4, "model_state_dict": state, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pth")
    for name in ("plain.pt", "ckpt.pth"):
        loaded = load_weights(tmp_path / name)
        assert set(loaded) == set(state)
        assert all(torch.equal(loaded[key], state[key]) for key in state)


class _Payload:
    """Unpickling this creates a marker file: stands in for arbitrary code in a hostile .pt file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_without_running_its_code(tmp_path, writer):
    marker = tmp_path / "pwned"
    # The payload is real: an unguarded unpickle would create the marker.
    pickle.loads(pickle.dumps(_Payload(marker))).close()
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "weights.pt"
    payload = {"fc.weight": torch.zeros(1), "evil": _Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match="refused"):
        load_weights(path)
    assert not marker.exists()


def test_unknown_weight_format_is_rejected(tmp_path):
    (tmp_path / "weights.h5").write_bytes(b"junk")
    with pytest.raises(ValueError, match="unsupported"):
        load_weights(tmp_path / "weights.h5")
