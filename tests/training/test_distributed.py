"""Scale-out with torchrun: two CPU processes (gloo) train ONE run, on disjoint halves of every epoch.

What must hold for ``python -m torch.distributed.run --nproc_per_node 2 -m xraycore train ...``:
rank 0 alone writes one run directory and prints it; the ranks split each epoch's images without
overlap; --batch-size is the global batch (4 per process here); and the numbers are the ones a
single process gets. "The same numbers" has one documented exception: BatchNorm. Each rank
normalises its own 4 images (PyTorch's SyncBatchNorm needs a GPU, so --sync-batchnorm is ignored
on CPU) and DDP keeps rank 0's running statistics. Hence two checks:

* backbone frozen (BatchNorm in inference mode, only the linear head trains): torchrun == one
  process, to float rounding (1e-5);
* full training: torchrun == a single-process *emulation* of two ranks (each half batch through the
  network on its own, gradients averaged, rank 0's running statistics kept), to 1e-5. Against a
  plain single process the same run drifts far apart on data this small (observed: epoch-2 train
  loss 0.22 vs 0.008), which is why there is no loose tolerance against it.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from tests.helpers.synthetic import make_dataset
from xraycore import models
from xraycore.runs import directory as runs
from xraycore.common.tensor_files import load_weights
from xraycore.training.config import TrainConfig
from xraycore.data.dataset import XrayDataset
from xraycore.training.loop import train
from xraycore.training.run_data import prepare_data

pytestmark = pytest.mark.slow  # torchrun: real rank processes

REPO = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2
TOLERANCE = 1e-5  # float rounding: gloo's all-reduce sums gradients in another order than one process
SETTINGS = dict(backbone="simple_cnn", pretrained="none", image_size=32, epochs=2, batch_size=8, augment=[],
                loss="ce", val_fraction=0.25, lr=3e-3, fit_ood=False)
FROZEN = dict(frozen_epochs=2, unfreeze=False)  # head-only training: BatchNorm uses running statistics


def cli_options(settings: dict) -> list[str]:
    """TrainConfig fields → the train verb's options (the same names with dashes)."""
    options = []
    for name, value in settings.items():
        text = ",".join(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else str(value)
        options += ["--" + name.replace("_", "-"), text]
    return options


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(data: Path, out: Path, run_id: str, settings: dict, tracked: bool = False
             ) -> tuple[subprocess.CompletedProcess, float]:
    """Two ranks on this machine; --master-addr 127.0.0.1 avoids depending on the host name resolving.
    ``tracked``: MLflow tracking on, to the runs folder's own store (the tests run untracked otherwise)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD_SIZE),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "xraycore", "train", "--data", str(data), *cli_options(settings),
               "--out", str(out), "--run-id", run_id, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XRAY_OFFLINE": "1", **({"XRAY_TRACKING": "on"} if tracked else {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, time.perf_counter() - started


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """32 images → 24 training (12 per rank, 3 steps of 4 + 4) and 8 validation."""
    return make_dataset(tmp_path_factory.mktemp("ddp-data"), per_class=16, size=48)


@pytest.fixture(scope="module")
def frozen_ddp(data, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("ddp-frozen")
    done, _seconds = torchrun(data, out, "ddp", {**SETTINGS, **FROZEN, "sync_batchnorm": True}, tracked=True)
    return done, out


def test_rank_zero_alone_writes_and_reports_one_finished_run(frozen_ddp):
    done, out = frozen_ddp
    assert sorted(p.name for p in out.iterdir()) == ["ddp", "mlartifacts", "mlflow.db"], "one run (and its tracking)"
    run = runs.Run(out / "ddp")
    assert done.stdout.splitlines() == [str(run.path)], "rank 1 must print nothing"
    assert run.status()["state"] == "finished"
    assert len(run.metrics()) == SETTINGS["epochs"]
    assert all(row["frozen_backbone"] for row in run.metrics())
    config = run.config
    assert config["environment"]["world_size"] == WORLD_SIZE
    assert config["effective_batch_size"] == 8 and config["per_process_batch_size"] == 4
    assert config["train"]["batch_size"] == 8 and config["train"]["lr"] == SETTINGS["lr"]
    assert "sync-batchnorm ignored" in (run.path / "log.txt").read_text()  # said, not silently dropped


def test_two_process_torchrun_makes_exactly_one_mlflow_run(frozen_ddp):
    from tests.training.test_tracking import search, store

    _done, out = frozen_ddp
    found = search(out)
    assert len(found) == 1 and found[0].data.tags["xray.run"] == "ddp"
    assert [m.step for m in store(out).get_metric_history(found[0].info.run_id, "val_auroc")] == \
        list(range(1, SETTINGS["epochs"] + 1))


def test_ranks_train_on_disjoint_halves_of_each_epoch(frozen_ddp):
    _done, out = frozen_ddp
    run = runs.Run(out / "ddp")
    assert run.config["data_parallel"] == {"ranks": 2, "samples_per_rank": [12, 12], "overlap": 0,
                                           "training_samples": 24}
    assert "data parallel: ranks=2, samples_per_rank=[12, 12], overlap=0" in (run.path / "log.txt").read_text()


def test_frozen_backbone_run_matches_a_single_process(frozen_ddp, data, tmp_path):
    _done, out = frozen_ddp
    distributed_run = runs.Run(out / "ddp")
    single_run = runs.Run(train(TrainConfig(data=str(data), out=str(tmp_path), **SETTINGS, **FROZEN)))
    assert single_run.config["data_parallel"]["samples_per_rank"] == [24]

    for ddp_row, single_row in zip(distributed_run.metrics(), single_run.metrics(), strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            assert ddp_row[key] == pytest.approx(single_row[key], abs=TOLERANCE), key
    ddp_val, single_val = distributed_run.predictions("val"), single_run.predictions("val")
    assert ddp_val["file"] == single_val["file"]
    np.testing.assert_allclose(ddp_val["logits"], single_val["logits"], atol=TOLERANCE)
    ddp_weights = load_weights(distributed_run.path / "last.safetensors")
    single_weights = load_weights(single_run.path / "last.safetensors")
    head = [name for name in ddp_weights if name.startswith("classifier")]
    assert head and not torch.equal(ddp_weights[head[0]], _initial_weights()[head[0]]), "the head must have trained"
    for name in ddp_weights:
        torch.testing.assert_close(ddp_weights[name], single_weights[name], atol=TOLERANCE, rtol=0)


def test_full_training_matches_two_ranks_emulated_in_one_process(data, tmp_path):
    """BatchNorm normalises per rank: reproduce that in one process and demand the same run."""
    done, seconds = torchrun(data, tmp_path, "ddp-full", SETTINGS)
    distributed_run = runs.Run(tmp_path / "ddp-full")
    assert distributed_run.status()["state"] == "finished"
    losses, weights = emulate_two_ranks(TrainConfig(data=str(data), **SETTINGS))

    assert [row["train_loss"] for row in distributed_run.metrics()] == pytest.approx(losses, abs=TOLERANCE)
    trained = load_weights(distributed_run.path / "last.safetensors")
    for name, tensor in weights.items():
        torch.testing.assert_close(trained[name], tensor.to(trained[name].dtype), atol=TOLERANCE, rtol=0)


def _initial_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model, _ = models.build_model("simple_cnn", 2, pretrained="none", head=models.HeadSpec(init=TrainConfig().head_init))
    return model.state_dict()


def emulate_two_ranks(config: TrainConfig) -> tuple[list[float], dict[str, torch.Tensor]]:
    """DDP by hand: per step each rank's 4 images go through the network alone, the loss gradients are
    averaged, and BatchNorm's running statistics are rank 0's (DDP broadcasts its buffers)."""
    splits = prepare_data(config)
    mean, std = models.input_normalisation(config.backbone, config.normalisation)
    dataset = XrayDataset(splits.cache, splits.train, output_size=config.image_size, mean=mean, std=std)
    torch.manual_seed(config.seed)
    model, _ = models.build_model(config.backbone, len(splits.class_names), pretrained="none",
                                  head=models.HeadSpec(init=config.head_init))  # as the trainer builds it
    model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    per_rank = config.batch_size // WORLD_SIZE
    buffers = lambda: {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}  # noqa: E731
    losses = []
    for epoch in range(config.epochs):
        shards = []
        for rank in range(WORLD_SIZE):
            sampler = DistributedSampler(dataset, num_replicas=WORLD_SIZE, rank=rank, seed=config.seed)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        loss_sum = 0.0
        for start in range(0, len(shards[0]), per_rank):
            optimizer.zero_grad()
            for rank, shard in enumerate(shards):
                images, labels, _rows = zip(*(dataset[i] for i in shard[start:start + per_rank]))
                batch = torch.stack(images).contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(model(batch), torch.tensor(labels))
                (loss / WORLD_SIZE).backward()
                loss_sum += loss.item() * len(labels)
                if rank == 0:
                    rank_zero_buffers = buffers()
            model.load_state_dict(rank_zero_buffers, strict=False)
            optimizer.step()
        losses.append(loss_sum / len(dataset))
    return losses, model.state_dict()


def test_two_nodes_with_c10d_rendezvous_train_the_same_run_as_one_node(frozen_ddp, data, tmp_path):
    """``torchrun --nnodes 2 --nproc-per-node 1`` launched twice (as two cluster nodes would be), meeting
    through a c10d rendezvous on loopback: the run equals the one-node, two-process run of the same recipe."""
    _done, one_node_out = frozen_ddp
    endpoint = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "xray-two-nodes",
               "-m", "xraycore", "train", "--data", str(data), *cli_options({**SETTINGS, **FROZEN, "sync_batchnorm": True}),
               "--out", str(tmp_path), "--run-id", "two-nodes", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XRAY_OFFLINE": "1"}
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for _node in range(2)]
    outputs = [node.communicate(timeout=180) for node in nodes]
    for node, (_stdout, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    assert sorted(stdout.strip() for stdout, _ in outputs) == ["", str(tmp_path / "two-nodes")], "one node reports"

    two_nodes, one_node = runs.Run(tmp_path / "two-nodes"), runs.Run(one_node_out / "ddp")
    assert two_nodes.config["environment"]["world_size"] == 2
    assert two_nodes.config["data_parallel"]["overlap"] == 0
    for two_row, one_row in zip(two_nodes.metrics(), one_node.metrics(), strict=True):
        for key in ("train_loss", "val_loss"):
            assert two_row[key] == pytest.approx(one_row[key], abs=TOLERANCE), key
    np.testing.assert_allclose(two_nodes.predictions("val")["logits"], one_node.predictions("val")["logits"],
                               atol=TOLERANCE)
