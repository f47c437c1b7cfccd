"""The training-stage contract on tiny models: a stage registered from this file trains through the
same loop; the long-video stage (LaVie §4.4) reads its conditioning frame; the LoRA stage (LaVie
§4.4) trains adapters alone, saved and applied the diffusers way; stage folders load through
diffusers' own `from_pretrained`, and their recipe sets the sampling defaults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lavie.model import VideoUNet
from lavie.pipelines import LaVieTextToVideoPipeline, apply_lora, custom_pipeline_file
from lavie.pipelines.cli import main as sample_main
from lavie.train.cli import main as train_main
from lavie.train.data import load_source
from lavie.train.objective import noised, to_latents
from lavie.train.stages import DataNeeds, TrainingStage, register_stage, stage_names
from lavie.train.stages.base import BaseStage
from test_train_data import captioned_manifest

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

QUIET = ["logging.report_to=none", "checkpoint.every=100", "data.num_workers=0"]


@pytest.fixture(scope="module")
def manifests(scenes_out, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("stages")
    return {"clips": captioned_manifest(scenes_out, root / "captioned.parquet")}


def clips_only(manifests) -> str:
    return f"data.sources=[{{name: clips, manifest: '{manifests['clips']}', kind: video}}]"


@register_stage
class TemporalOnlyStage(TrainingStage):
    """A stage defined outside the package: video-only denoising of the temporal layers."""

    name = "temporal-only"

    def data_needs(self) -> DataNeeds:
        return DataNeeds(images="none")

    def build_unet(self, unet_dir: Path) -> VideoUNet:
        unet = VideoUNet.from_pretrained(unet_dir)
        unet.freeze_spatial()
        return unet

    def loss(self, unet, models, batch, generator):
        x0 = to_latents(batch, "video", models, generator)  # (B, C, T, h, w)
        noisy, timesteps, target = noised(models, x0, generator)
        pred = unet(noisy, timesteps, self.text(models, batch["captions"], generator)).sample
        loss = torch.nn.functional.mse_loss(pred, target)
        return loss, {"loss_video": loss.detach()}


def test_a_stage_registered_outside_the_package_trains(manifests, tmp_path):
    assert {"base", "interp", "vsr", "long", "lora", "temporal-only"} <= set(stage_names())
    rc = train_main(["--stage", "temporal-only", "-c", "tiny-base", f"output_dir={tmp_path}", "stage=temporal-only",
                     clips_only(manifests), "data.n_images=0", "train.max_steps=2", *QUIET])
    assert rc == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    pipe = LaVieTextToVideoPipeline.from_pretrained(tmp_path / "final")  # the output is a stage folder
    before = VideoUNet.from_pretrained(tmp_path / "init/tiny-base/unet").state_dict()
    changed = {k for k, v in pipe.unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(VideoUNet.is_temporal_parameter(k) for k in changed)


def test_long_stage_reads_its_conditioning_frame(manifests, tmp_path):
    out = tmp_path / "long"
    rc = train_main(["--stage", "long", "-c", "tiny-long", f"output_dir={out}", clips_only(manifests), "train.max_steps=3", *QUIET])
    assert rc == 0
    pipe = LaVieTextToVideoPipeline.from_pretrained(out / "final")
    assert pipe.unet.config.conditioning == "context"
    assert pipe.unet.unet2d.conv_in.weight[:, 4:].abs().sum() > 0  # the zero-initialised frame channels learned

    def sample(first_frame: torch.Tensor) -> np.ndarray:
        return pipe("a red bus", num_frames=4, num_inference_steps=2, guidance_scale=1.0, context_latents=first_frame,
                    generator=torch.Generator().manual_seed(0)).frames

    frame = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert not np.allclose(sample(frame), sample(-frame), atol=1e-4)  # another conditioning frame, another video
    np.testing.assert_array_equal(sample(frame), sample(frame))
    video = out / "long.mp4"
    assert sample_main(["a red bus", "--base", str(out / "final"), "--long", "3", "--num-frames", "4", "--steps", "1",
                        "--seed", "0", "-o", str(video)]) == 0
    import av

    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4 + 2 * 3  # each later segment adds 3 new frames


def test_lora_stage_saves_only_the_adapter_and_applies_by_scale(manifests, tmp_path):
    base = tmp_path / "base"
    from lavie.model.tiny import build_tiny_components

    build_tiny_components(base, "base")
    subject = tmp_path / "subject"  # a personalisation set: images with a caption file each
    subject.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(subject / f"{i}.png")
        (subject / f"{i}.txt").write_text(f"a photo of sks toy number {i}\n")
    assert len(load_source("subject", subject, "image")) == 3
    out = tmp_path / "lora"
    images = f"data.sources=[{{name: subject, manifest: '{subject}', kind: image}}]"
    rc = train_main(["--stage", "lora", "-c", "tiny-lora", f"output_dir={out}", "model.tiny=false", f"model.pretrained={base}",
                     images, "train.max_steps=3", *QUIET])
    assert rc == 0
    final = out / "final"
    assert sorted(p.name for p in final.iterdir()) == ["config.yaml", "pytorch_lora_weights.safetensors"]
    weights = load_file(final / "pytorch_lora_weights.safetensors")
    assert weights and all(".lora_A." in k or ".lora_B." in k for k in weights)  # adapter weights only
    assert not any(VideoUNet.is_temporal_parameter(k) for k in weights)  # spatial attention only
    assert any(".attn1." in k for k in weights) and any(".attn2." in k for k in weights)

    def sample(scale: float | None) -> np.ndarray:
        pipe = LaVieTextToVideoPipeline.from_pretrained(base)
        if scale is not None:
            apply_lora(pipe, final, scale)
        return pipe("a red bus", num_frames=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames

    plain = sample(None)
    np.testing.assert_allclose(sample(0.0), plain, atol=1e-6)  # scale 0: the base model
    assert not np.allclose(sample(1.0), plain, atol=1e-4)  # the adapter changes the video
    video = tmp_path / "lora.mp4"
    assert sample_main(["a red bus", "--base", str(base), "--lora", str(final), "--lora-scale", "0.5", "--num-frames", "2",
                        "--steps", "1", "--seed", "0", "-o", str(video)]) == 0 and video.is_file()


def test_stage_folder_loads_through_diffusers_and_keeps_its_recipe(tmp_path):
    from diffusers import DiffusionPipeline
    from diffusers.utils import export_to_video

    from lavie.model.tiny import build_tiny_components

    folder = build_tiny_components(tmp_path / "base", "base")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "LaVieTextToVideoPipeline" and index["num_inference_steps"] == 50
    pipe = DiffusionPipeline.from_pretrained(folder, custom_pipeline=custom_pipeline_file(folder), trust_remote_code=True)
    assert type(pipe) is LaVieTextToVideoPipeline

    pipe.register_to_config(num_inference_steps=3, guidance_scale=1.0)  # a converter writes the official recipe like this
    pipe.save_pretrained(tmp_path / "recipe")
    pipe = LaVieTextToVideoPipeline.from_pretrained(tmp_path / "recipe")
    seen = []

    def count(p, i, t, kwargs):
        seen.append(i)
        return kwargs

    frames = pipe("a dog", num_frames=2, callback_on_step_end=count).frames
    assert seen == [0, 1, 2]  # the folder's recipe
    seen.clear()
    pipe("a dog", num_frames=2, num_inference_steps=1, callback_on_step_end=count, output_type="pil")
    assert seen == [0]  # a call argument overrides it
    assert frames.shape == (1, 2, 16, 16, 3) and 0 <= frames.min() and frames.max() <= 1
    assert Path(export_to_video(list(frames[0]), str(tmp_path / "dog.mp4"), fps=4)).is_file()


def test_stage_errors_name_the_key(tmp_path, capsys):
    for stage, override, message in [("lora", "ema.enabled=true", "ema.enabled"), ("long", "long.num_context=[0]", "long.num_context"),
                                     ("no-such-stage", "seed=0", "choose one of")]:
        with pytest.raises(SystemExit):
            train_main(["--stage", stage, "-c", "tiny-base", f"output_dir={tmp_path}", f"stage={stage}", override])
        assert message in capsys.readouterr().err
    assert isinstance(BaseStage.name, str)
