"""Several machines on one: torchrun with two "nodes" (c10d rendezvous, gloo), and the preprocess flow
fanned out over a real Dask cluster (a scheduler and two workers, each its own process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vt_models.models.checkpoint import load_checkpoint

from .conftest import BIN, free_port


def process_env(project: Path, **extra: str) -> dict[str, str]:
    """The environment of a product process started by a drill: this venv's tools first, the project's
    own sqlite MLflow store unless ``extra`` says otherwise, one BLAS thread (the CI machine has two cores)."""
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


@pytest.mark.slow
def test_torchrun_two_nodes_end_with_identical_weights(tiny_project: Path) -> None:
    """Two torchrun launchers (one per "node", one process each) meet at a c10d rendezvous on 127.0.0.1 and
    train together; every rank reports the digest of its final weights, and they match the saved ones."""
    from vt_models.config import load_config
    from vt_models.models.builder import build_backbone
    from vt_models.train.distributed import weights_digest

    port = free_port()
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                f"--node_rank={node}",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}",
                "--rdzv_id=vt-drill",
                "-m",
                "vt_models",
                "-S",
                "pretrain.epochs=2",
                "pretrain",
                "-b",
                "resnet18",
            ],
            cwd=tiny_project,
            env=process_env(tiny_project),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = []
    try:
        for proc in launchers:
            out, err = proc.communicate(timeout=600)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in launchers:
            if proc.poll() is None:
                proc.kill()
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    reported = {}
    for _, _, err in outputs:
        for rank, world, digest in re.findall(r"rank (\d) of (\d): weights sha256 ([0-9a-f]{64})", err):
            assert world == "2"
            reported[int(rank)] = digest
    assert sorted(reported) == [0, 1], "each node's rank reported its weights"
    assert reported[0] == reported[1]
    assert sum(out.count("pretrain resnet18: best val macro-F1") for _, out, _ in outputs) == 1, "only rank 0"
    ckpt = load_checkpoint(tiny_project / "models/pretrain/resnet18/last.pt")
    model, _ = build_backbone(
        "resnet18", "none", num_classes=3, modality=load_config(tiny_project / "params.yaml").pretrain.modality
    )
    model.load_state_dict(ckpt["model"])
    assert weights_digest(dict(model.named_parameters())) == reported[0], "the saved weights are the ranks' weights"
    assert [r["val_count"] for r in ckpt["history"]] == [6.0, 6.0], "val covers both nodes' shards"
