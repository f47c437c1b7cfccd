"""Sampling on tiny random components saved to disk and loaded through the real loading path:
the stages, long videos, and `lavie-sample` end to end (mp4 decoded back with PyAV)."""

import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from lavie.model import VideoUNet
from lavie.model.tiny import build_tiny_components
from lavie.pipelines import (
    LaVieInterpolationPipeline,
    LaVieTextToVideoPipeline,
    LaVieVideoSuperResolutionPipeline,
    ModelFolderError,
    frame_windows,
    load_stage,
    make_scheduler,
)
from lavie.pipelines.cli import main

STEPS = "2"


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {stage: build_tiny_components(root / stage, stage=stage) for stage in ("base", "interp", "vsr")}


def read_mp4(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])  # (T, H, W, 3)


def test_cascade_cli_writes_61_frames_at_4x(tiny_dirs, tmp_path, capsys):
    out, grid = tmp_path / "cat.mp4", tmp_path / "cat.png"
    rc = main(["a cat playing the piano", "--base", str(tiny_dirs["base"]), "--interp", str(tiny_dirs["interp"]),
               "--vsr", str(tiny_dirs["vsr"]), "-o", str(out), "--grid", str(grid), "--steps", STEPS, "--seed", "0",
               "--negative-prompt", "blurry", "--scheduler", "dpm++", "--vae-slicing"])
    assert rc == 0
    frames = read_mp4(out)
    assert frames.shape == (61, 64, 64, 3)  # 16 -> 61 frames, 16x16 -> 64x64
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == 32  # 8 fps key frames, 4x denser
    assert Image.open(grid).size == (8 * 64, 8 * 64)  # 61 frames tiled 8 per row
    assert "61 frames" in capsys.readouterr().out


def test_base_cli_is_deterministic_per_seed(tiny_dirs, tmp_path):
    def sample(name, seed):
        out = tmp_path / name
        assert main(["a red car", "--base", str(tiny_dirs["base"]), "-o", str(out), "--steps", STEPS, "--seed", seed]) == 0
        return read_mp4(out)

    first, again, other = sample("a.mp4", "7"), sample("b.mp4", "7"), sample("c.mp4", "8")
    assert first.shape == (16, 16, 16, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_cli_names_a_missing_model_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    exe = Path(sys.executable).parent / "lavie-sample"
    result = subprocess.run([str(exe), "a cat", "--base", str(missing), "-o", str(tmp_path / "x.mp4")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert str(missing) in result.stderr and "hub id" in result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_incomplete_folder_names_missing_parts(tiny_dirs, tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(tiny_dirs["base"], folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(ModelFolderError, match="vae/"):
        load_stage(folder, "base")
    with pytest.raises(ModelFolderError, match="interp stage needs"):
        load_stage(tiny_dirs["base"], "interp")  # a base UNet cannot interpolate


def test_help_explains_model_folders(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--base", "--interp", "--vsr", "--seed", "--cpu-offload", "--vae-slicing", "--grid", "stable-diffusion-v1-4", "x4-upscaler"):
        assert needle in text


def test_image_unet_folder_is_inflated(tiny_dirs, tmp_path):
    folder = tmp_path / "sd-like"
    shutil.copytree(tiny_dirs["base"], folder)
    video_unet = VideoUNet.from_pretrained(folder / "unet")
    shutil.rmtree(folder / "unet")
    unet2d = UNet2DConditionModel.from_config({k: v for k, v in video_unet.config["unet2d_config"].items() if not k.startswith("_")})
    unet2d.save_pretrained(folder / "unet")
    stage = load_stage(folder, "base")
    assert isinstance(stage, LaVieTextToVideoPipeline) and isinstance(stage.unet, VideoUNet)


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++", "euler"])
def test_base_stage_with_each_scheduler(tiny_dirs, scheduler):
    stage = load_stage(tiny_dirs["base"], "base")
    stage.scheduler = make_scheduler(scheduler, stage.scheduler.config)
    video = stage("a dog", num_frames=4, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 4, 16, 16, 3) and np.isfinite(video).all()
    with pytest.raises(ValueError, match="ddim"):
        make_scheduler("pndm-ish", stage.scheduler.config)


def test_cpu_offload_gives_same_video(tiny_dirs):
    stage = load_stage(tiny_dirs["base"], "base")
    plain = stage("a dog", num_frames=3, num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="pt").frames
    stage.enable_model_cpu_offload(device="cpu")
    stage.vae_chunk_size = 1
    offloaded = stage("a dog", num_frames=3, num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="pt").frames
    torch.testing.assert_close(plain, offloaded)


def test_interpolation_and_super_resolution_stages(tiny_dirs):
    interp = load_stage(tiny_dirs["interp"], "interp")
    vsr = load_stage(tiny_dirs["vsr"], "vsr")
    assert isinstance(interp, LaVieInterpolationPipeline) and isinstance(vsr, LaVieVideoSuperResolutionPipeline)
    key_frames = torch.rand(1, 3, 3, 16, 16) * 2 - 1
    dense = interp("waves", key_frames, num_inference_steps=2, factor=4, output_type="pt").frames  # (B, T, 3, H, W) in [0, 1]
    assert dense.shape == (1, 9, 3, 16, 16)
    low = dense.permute(0, 2, 1, 3, 4)[:, :, :5, :8, :12] * 2 - 1
    large = vsr("waves", low, num_inference_steps=2, chunk_size=3, chunk_overlap=1, noise_level=20, output_type="pil").frames
    assert len(large[0]) == 5 and large[0][0].size == (48, 32)
    with pytest.raises(ValueError, match="noise_level"):
        vsr("waves", dense, noise_level=10_000)


def test_frame_windows_cover_every_frame_with_overlap():
    windows = frame_windows(61, 8, 2)
    assert windows[0] == (0, 8) and windows[-1] == (53, 61)
    assert all(end - start == 8 for start, end in windows)
    assert all(b[0] < a[1] for a, b in zip(windows, windows[1:]))  # neighbours overlap
    assert frame_windows(5, 8, 2) == [(0, 5)]
    with pytest.raises(ValueError, match="overlap"):
        frame_windows(10, 4, 4)


def test_long_video_extends_from_last_frames(tiny_dirs):
    base = load_stage(tiny_dirs["base"], "base")
    base.unet = base.unet.with_conditioning("context").eval()
    seen_masks = []
    base.unet.register_forward_pre_hook(lambda m, args, kwargs: seen_masks.append(kwargs["cond"][0, -1, :, 0, 0].tolist()), with_kwargs=True)
    video = base.generate_long("a train", num_segments=3, num_context=2, num_frames=5, num_inference_steps=2,
                               guidance_scale=3.0, context_guidance_scale=2.0, generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 5 + 2 * 3, 16, 16, 3)
    assert [1.0, 1.0, 0.0, 0.0, 0.0] in seen_masks  # later windows see two context frames
    assert seen_masks[0] == [0.0] * 5  # the first window starts from none
    with pytest.raises(ValueError, match="context"):
        load_stage(tiny_dirs["base"], "base").generate_long("a train", num_segments=2)
