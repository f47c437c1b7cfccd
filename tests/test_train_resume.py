"""Resuming continues the same trajectory, and two-process DDP on CPU (gloo through torchrun)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lavie.model import VideoUNet
from lavie.train.cli import main as train_main
from test_train_data import captioned_manifest, image_manifest

ROOT = Path(__file__).resolve().parents[1]
N = 3


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def sources(scenes_out, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("train-resume")
    clips = captioned_manifest(scenes_out, root / "captioned.parquet")
    images = image_manifest(root / "images")
    return (f"data.sources=[{{name: clips, manifest: '{clips}', kind: video}}, "
            f"{{name: images, manifest: '{images}', kind: image}}]")


def args(out: Path, sources: str, *extra: str) -> list[str]:
    # warm-up and a decaying schedule, so a resume that lost the LR schedule or the optimizer would differ
    return ["--stage", "base", "-c", str(ROOT / "configs/train/tiny-base.yaml"), f"output_dir={out}", sources,
            f"train.max_steps={2 * N}", f"checkpoint.every={N}", "checkpoint.keep_last=5", "train.deterministic=true",
            "train.lr_warmup_steps=2", "train.lr_scheduler=linear", "train.learning_rate=0.001", "logging.every=1", *extra]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return VideoUNet.from_pretrained(folder).state_dict()


def test_kill_and_resume_ends_with_the_same_weights(sources, tmp_path):
    straight = tmp_path / "straight"
    assert train_main(args(straight, sources)) == 0

    # the same run in a process killed (SIGKILL, no chance to clean up) once checkpoint N is written
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "lavie.train.cli", *args(killed, sources)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    deadline = time.monotonic() + 240
    while not (killed / f"checkpoints/checkpoint-{N}").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert (killed / f"checkpoints/checkpoint-{N}").is_dir()

    assert train_main(args(killed, sources, "--resume", str(killed / f"checkpoints/checkpoint-{N}"))) == 0
    for part in ("unet", "unet_ema"):
        a, b = weights(straight / f"checkpoints/checkpoint-{2 * N}" / part), weights(killed / f"checkpoints/checkpoint-{2 * N}" / part)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    # and the weights did move: the comparison is not between two untouched models
    start = weights(straight / "init/tiny-base/unet")
    assert any(not torch.equal(start[k], a[k]) for k in a)
    log = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 * N and log[-1]["lr"] == pytest.approx(0.0)  # the linear schedule reached its end


def test_two_process_ddp_on_cpu(sources, tmp_path):
    out = tmp_path / "ddp"
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "lavie.train.cli", *args(out, sources, "train.deterministic=false")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ckpt = out / f"checkpoints/checkpoint-{2 * N}"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    # each of the 2 ranks consumed batch_size=2 clips (and 2 images per clip) every step
    assert last["mix_total/clips"] == 2 * N * 2 * 2 and last["mix_total/images"] == 2 * last["mix_total/clips"]
    trained = weights(ckpt / "unet")
    start = weights(out / "init/tiny-base/unet")
    assert any(not torch.equal(start[k], trained[k]) for k in trained)
    from lavie.pipelines import load_stage

    stage = load_stage(ckpt, "base")  # the checkpoint is a model folder
    assert stage.unet.config.conditioning == "none"
