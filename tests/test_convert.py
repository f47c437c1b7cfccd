"""`lavie-convert` on a tiny copy of the released download layout: checkpoints named as the released
code names them, beside tiny image pipelines shaped like SD 1.4 and the x4 upscaler. The converted
folders sample through `lavie-sample` and fine-tune through `lavie-train`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest
import torch
from diffusers import UNet2DConditionModel

from lavie.model import VideoSRUNet, VideoUNet
from lavie.model.convert import to_official_state_dict
from lavie.model.tiny import build_tiny_components, load_preset
from lavie.pipelines.cli import main as sample_main
from lavie.pipelines.convert import main as convert_main
from lavie.train.cli import main as train_main
from test_train_data import captioned_manifest, image_manifest

ROOT = Path(__file__).resolve().parents[1]


def image_pipeline(folder: Path, stage: str) -> Path:
    """A tiny image pipeline folder: the stage's tiny components with a plain 2-D UNet."""
    build_tiny_components(folder, stage=stage)
    shutil.rmtree(folder / "unet")
    torch.manual_seed(5)
    UNet2DConditionModel(**load_preset(stage)["unet2d"]).save_pretrained(folder / "unet")
    return folder


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, dict]:
    """pretrained_models/ as the LaVie README lays it out, and the networks behind its checkpoints."""
    root = tmp_path_factory.mktemp("pretrained_models")
    image_pipeline(root / "stable-diffusion-v1-4", "base")
    image_pipeline(root / "stable-diffusion-x4-upscaler", "vsr")
    networks = {}
    for stage, name in (("base", "lavie_base.pt"), ("interp", "lavie_interpolation.pt"), ("vsr", "lavie_vsr.pt")):
        torch.manual_seed(7)
        preset = load_preset(stage)
        cls = VideoSRUNet if stage == "vsr" else VideoUNet
        model = cls.from_unet2d(UNet2DConditionModel(**preset["unet2d"]), **preset["video"])
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        state = to_official_state_dict(model, stage)
        torch.save({"ema": state} if stage == "vsr" else state, root / name)  # the VSR release nests it under "ema"
        networks[stage] = model.eval()
    return root, networks


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory) -> Path:
    root, _ = official
    out = tmp_path_factory.mktemp("converted")
    assert convert_main(["--official", str(root), "-o", str(out), "--overwrite"]) == 0
    return out


def test_official_layout_converts_to_complete_stage_folders(official, converted):
    _, networks = official
    for stage in ("base", "interp", "vsr"):
        folder = converted / stage
        assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"} <= {p.name for p in folder.iterdir()}
        index = json.loads((folder / "model_index.json").read_text())
        cls = VideoSRUNet if stage == "vsr" else VideoUNet
        unet = cls.from_pretrained(folder / "unet")
        assert all(torch.equal(v, unet.state_dict()[k]) for k, v in networks[stage].state_dict().items())
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        assert scheduler["beta_schedule"] == "linear" and (scheduler["beta_start"], scheduler["beta_end"]) == (0.0001, 0.02)
        assert index["num_inference_steps"] == 50
    recipes = {s: json.loads((converted / s / "model_index.json").read_text()) for s in ("base", "interp", "vsr")}
    assert json.loads((converted / "base/scheduler/scheduler_config.json").read_text())["_class_name"] == "DDPMScheduler"
    assert (recipes["base"]["guidance_scale"], recipes["interp"]["guidance_scale"], recipes["vsr"]["guidance_scale"]) == (7.5, 4.0, 5.0)
    assert recipes["vsr"]["negative_prompt"] == "blur, worst quality" and recipes["vsr"]["noise_level"] == 50
    assert recipes["vsr"]["chunk_size"] == 8 and recipes["vsr"]["chunk_overlap"] == 0
    vsr_scheduler = json.loads((converted / "vsr/scheduler/scheduler_config.json").read_text())
    assert vsr_scheduler["_class_name"] == "DDIMScheduler" and vsr_scheduler["prediction_type"] == "v_prediction"


def test_converted_cascade_samples_an_mp4(converted, tmp_path):
    out = tmp_path / "cascade.mp4"
    assert sample_main(["a corgi walking in the park", "--base", str(converted / "base"), "--interp", str(converted / "interp"),
                        "--vsr", str(converted / "vsr"), "--steps", "2", "--num-frames", "4", "--seed", "0", "-o", str(out)]) == 0
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 13 and (frames[0].height, frames[0].width) == (64, 64)  # 4 -> 13 frames, 16 -> 64 pixels


def test_converted_base_fine_tunes(converted, scenes_out, tmp_path, fresh_accelerate_state):
    manifest = captioned_manifest(scenes_out, tmp_path / "captioned.parquet")
    images = image_manifest(tmp_path / "images")  # joint image-video fine-tuning
    out = tmp_path / "run"
    sources = f"data.sources=[{{name: clips, manifest: '{manifest}', kind: video}}, {{name: images, manifest: '{images}', kind: image}}]"
    rc = train_main(["--stage", "base", "-c", str(ROOT / "configs/train/tiny-base.yaml"), f"output_dir={out}", "model.tiny=false",
                     f"model.pretrained={converted / 'base'}", sources,
                     "train.max_steps=2", "validation.every=0", "checkpoint.every=2"])
    assert rc == 0
    tuned = VideoUNet.from_pretrained(out / "final" / "unet")
    assert tuned.config.temporal_position == "rope_bias" and tuned.config.video_norm  # the released layout, kept


def test_user_errors_are_one_line_before_any_model_is_built(official, tmp_path, capsys):
    root, _ = official
    cases = [
        (["--stage", "base", str(root / "missing.pt"), "--image-model", str(root / "stable-diffusion-v1-4"), "-o", str(tmp_path / "a")], "no such file"),
        (["--stage", "base", str(root / "lavie_base.pt"), "--image-model", str(tmp_path), "-o", str(tmp_path / "a")], "lacks"),
        (["--stage", "interp", str(root / "lavie_base.pt"), "--image-model", str(root / "stable-diffusion-v1-4"), "-o", str(tmp_path / "a")],
         "holds the base network, not interp"),
        (["--stage", "vsr", str(root / "lavie_vsr.pt"), "--image-model", str(root / "stable-diffusion-v1-4"), "-o", str(tmp_path / "a")],
         "lacks low_res_scheduler/: give the stable-diffusion-x4-upscaler"),
        (["--stage", "base", str(root / "lavie_base.pt"), "--image-model", str(root / "stable-diffusion-x4-upscaler"), "-o", str(tmp_path / "a")],
         "has shape"),
        (["--official", str(root), "--stage", "base", "-o", str(tmp_path / "a")], "give no CHECKPOINT"),
        (["-o", str(tmp_path / "a")], "give CHECKPOINT"),
    ]
    for argv, message in cases:
        assert convert_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("lavie-convert: ") and message in err and "\n" not in err, err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert convert_main(["--stage", "base", str(root / "lavie_base.pt"), "--image-model", str(root / "stable-diffusion-v1-4"), "-o", str(busy)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["interp", "vsr"])
def test_converted_interp_and_vsr_fine_tune_and_resume_exactly(stage, converted, scenes_out, tmp_path, fresh_accelerate_state):
    manifest = captioned_manifest(scenes_out, tmp_path / "captioned.parquet")
    out = tmp_path / "run"
    argv = ["--stage", stage, "-c", str(ROOT / f"configs/train/tiny-{stage}.yaml"), f"output_dir={out}", "model.tiny=false",
            f"model.pretrained={converted / stage}", f"data.sources=[{{name: clips, manifest: '{manifest}', kind: video}}]",
            "train.max_steps=2", "checkpoint.every=1", "checkpoint.keep_last=5", "validation.every=0", "train.deterministic=true"]
    assert train_main(argv) == 0
    cls = VideoSRUNet if stage == "vsr" else VideoUNet
    straight = cls.from_pretrained(out / "checkpoints/checkpoint-2/unet").state_dict()
    converted_unet = cls.from_pretrained(converted / stage / "unet").state_dict()
    assert any(not torch.equal(v, straight[k]) for k, v in converted_unet.items())  # it trained
    shutil.rmtree(out / "checkpoints/checkpoint-2")
    shutil.rmtree(out / "final")
    assert train_main([*argv, "--resume", str(out / "checkpoints/checkpoint-1")]) == 0
    resumed = cls.from_pretrained(out / "checkpoints/checkpoint-2/unet").state_dict()
    assert all(torch.equal(v, resumed[k]) for k, v in straight.items())
