"""`lavie-train` end to end on CPU: curated manifest -> train each stage with its tiny preset ->
`lavie-sample` with the checkpoint writes an mp4. Also the CLI surface (help, configs, errors),
non-finite-loss handling, preemption by SIGTERM, and CLIPSIM on a tiny local CLIP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml

from lavie.pipelines.cli import main as sample_main
from lavie.train.cli import main as train_main
from lavie.train.config import describe_keys
from test_train_data import captioned_manifest, image_manifest

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def manifests(scenes_out, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("train-e2e")
    return {"clips": captioned_manifest(scenes_out, root / "captioned.parquet"), "images": image_manifest(root / "images")}


def sources(manifests, images: bool = True) -> str:
    items = [f"{{name: clips, manifest: '{manifests['clips']}', kind: video}}"]
    if images:
        items.append(f"{{name: images, manifest: '{manifests['images']}', kind: image}}")
    return f"data.sources=[{', '.join(items)}]"


def mp4_frames(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        frames = [f for f in container.decode(video=0)]
    return len(frames), frames[0].height, frames[0].width


@pytest.fixture(scope="module")
def base_run(manifests, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base-run")
    rc = train_main(["--stage", "base", "-c", str(ROOT / "configs/train/tiny-base.yaml"), f"output_dir={out}",
                     sources(manifests), "validation.every=4", "data.num_workers=1"])
    assert rc == 0
    return out


def test_base_trains_then_samples(base_run, tmp_path):
    metrics = [json.loads(line) for line in (base_run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(m["loss"]) and "loss_image" in m for m in steps)
    assert steps[-1]["decode_failures"] > 0 and steps[-1]["mix_total/images"] == 2 * steps[-1]["mix_total/clips"]
    assert sorted(p.name for p in (base_run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert list((base_run / "logs").rglob("events.out.tfevents.*"))
    assert mp4_frames(base_run / "validation/step-4/00.mp4")[0] == 4
    ckpt = base_run / "checkpoints/checkpoint-4"
    assert {"unet", "unet_ema", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "config.yaml"} <= {p.name for p in ckpt.iterdir()}
    out = tmp_path / "base.mp4"
    assert sample_main(["a red bus", "--base", str(ckpt), "--steps", "2", "--num-frames", "4", "--seed", "0", "-o", str(out)]) == 0
    assert mp4_frames(out) == (4, 16, 16)


def test_interp_from_base_checkpoint_then_samples(base_run, manifests, tmp_path):
    out_dir = tmp_path / "interp-run"
    rc = train_main(["--stage", "interp", "-c", str(ROOT / "configs/train/tiny-interp.yaml"), f"output_dir={out_dir}",
                     "model.tiny=false", f"model.pretrained={base_run / 'final'}", sources(manifests, images=False),
                     "validation.every=4"])
    assert rc == 0
    assert mp4_frames(out_dir / "validation/step-4/00.mp4") == (9, 16, 16)  # key frames of a real clip, interpolated
    unet_config = json.loads((out_dir / "checkpoints/checkpoint-4/unet/config.json").read_text())
    assert unet_config["conditioning"] == "interpolation"
    out = tmp_path / "interp.mp4"
    assert sample_main(["a red bus", "--base", str(base_run / "final"), "--interp", str(out_dir / "checkpoints/checkpoint-4"),
                        "--steps", "2", "--num-frames", "3", "--seed", "0", "-o", str(out)]) == 0
    assert mp4_frames(out)[0] == 9  # 3 key frames -> 4 * (3 - 1) + 1


def test_vsr_trains_temporal_layers_only_then_samples(base_run, manifests, tmp_path):
    from lavie.model import VideoSRUNet

    out_dir = tmp_path / "vsr-run"
    rc = train_main(["--stage", "vsr", "-c", str(ROOT / "configs/train/tiny-vsr.yaml"), f"output_dir={out_dir}", sources(manifests),
                     "validation.every=4"])
    assert rc == 0
    assert mp4_frames(out_dir / "validation/step-4/00.mp4") == (4, 32, 32)  # a real clip, downscaled 4x then upscaled
    before = VideoSRUNet.from_pretrained(out_dir / "init/tiny-vsr/unet")
    after = VideoSRUNet.from_pretrained(out_dir / "checkpoints/checkpoint-4/unet")
    changed = {n for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters()) if not torch.equal(a, b)}
    assert changed and all(VideoSRUNet.is_temporal_parameter(n) for n in changed)  # spatial layers frozen (App. C)
    out = tmp_path / "vsr.mp4"
    assert sample_main(["a red bus", "--base", str(base_run / "final"), "--vsr", str(out_dir / "checkpoints/checkpoint-4"),
                        "--steps", "1", "--num-frames", "2", "--seed", "0", "-o", str(out)]) == 0
    assert mp4_frames(out) == (2, 64, 64)


def test_help_and_presets_document_every_key(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    text = capsys.readouterr().out
    keys = [key for key, _, _ in describe_keys()]
    assert len(keys) > 60 and all(key in text for key in keys)
    for stage in ("base", "interp", "vsr", "long", "lora"):
        config = yaml.safe_load((ROOT / f"configs/train/{stage}.yaml").read_text())
        for key in keys:
            node = config
            for part in key.replace("[]", ".0").split("."):
                assert part.isdigit() or part in node, f"configs/train/{stage}.yaml lacks {key}"
                node = node[int(part)] if part.isdigit() else node[part]


def test_unknown_key_and_bad_value_are_errors(capsys, tmp_path):
    for override, message in [("train.max_stpes=3", "unknown key"), ("train.mixed_precision=fp8", "choose one of"),
                               ("data.crop=middle", "data.crop")]:
        with pytest.raises(SystemExit):
            train_main(["--stage", "base", "-c", str(ROOT / "configs/train/tiny-base.yaml"), f"output_dir={tmp_path}", override])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["--stage", "vsr", "-c", str(ROOT / "configs/train/tiny-base.yaml")])
    assert "--stage vsr but the config says stage: base" in capsys.readouterr().err


def test_nonfinite_losses_skip_steps_then_stop_with_checkpoint(manifests, tmp_path, monkeypatch, capsys):
    from lavie.train.stages.base import BaseStage

    real = BaseStage.loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # finite, then NaN from the third call on
        loss, parts = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), parts) if calls["n"] >= 3 else (loss, parts)

    monkeypatch.setattr(BaseStage, "loss", flaky)
    rc = train_main(["--stage", "base", "-c", str(ROOT / "configs/train/tiny-base.yaml"), f"output_dir={tmp_path}",
                     sources(manifests), "train.max_steps=20", "train.max_nonfinite_steps=3", "checkpoint.every=100"])
    assert rc == 3
    assert "3 non-finite losses in a row" in capsys.readouterr().out
    assert (tmp_path / "checkpoints/checkpoint-5").is_dir()  # 2 good steps, 3 skipped
    last = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["nonfinite_steps"] == 3
    from lavie.model import VideoUNet

    weights = VideoUNet.from_pretrained(tmp_path / "checkpoints/checkpoint-5/unet").state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_sigterm_writes_a_checkpoint_and_exits_zero(manifests, tmp_path):
    cmd = [sys.executable, "-m", "lavie.train.cli", "--stage", "base", "-c", str(ROOT / "configs/train/tiny-base.yaml"),
           f"output_dir={tmp_path}", sources(manifests), "train.max_steps=100000", "checkpoint.every=2", "logging.every=1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not (tmp_path / "checkpoints/checkpoint-2").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-2000:]
    assert "SIGTERM received" in output
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    stopped = steps[-1]
    assert stopped >= 2 and json.loads((tmp_path / f"checkpoints/checkpoint-{stopped}/trainer_state.json").read_text())["step"] == stopped
    # the preempted run continues from where it stopped
    assert train_main(["--stage", "base", "-c", str(ROOT / "configs/train/tiny-base.yaml"), f"output_dir={tmp_path}",
                       sources(manifests), f"train.max_steps={stopped + 1}", "--resume", "latest"]) == 0
    assert (tmp_path / f"checkpoints/checkpoint-{stopped + 1}").is_dir() and (tmp_path / "final/unet").is_dir()


def test_clipsim_runs_on_a_tiny_local_clip(tmp_path, caplog):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from lavie.model.tiny import build_tokenizer
    from lavie.train.validation import ClipSimilarity, load_clip_similarity

    tokenizer = build_tokenizer(16)
    config = CLIPConfig(text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
                                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                                       "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    folder = tmp_path / "tiny-clip"
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)

    scorer = load_clip_similarity(str(folder), "cpu")
    assert isinstance(scorer, ClipSimilarity)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    score = scorer(frames, "a red bus")
    assert -1.0 <= score <= 1.0 and score != 0.0
    assert scorer(frames, "a red bus") == pytest.approx(score)  # deterministic
    assert scorer(frames[::-1], "a red bus") == pytest.approx(score, abs=1e-6)  # a mean over frames
    assert scorer(frames, "a green forest at night") != pytest.approx(score, abs=1e-6)
    # weights that cannot be had are one clear log line, not a crash
    assert load_clip_similarity(str(tmp_path / "no-such-clip"), "cpu") is None
    assert "CLIPSIM skipped" in caplog.text
