"""Training data: clip decoding from manifests (frame window, stride, crop, range), images, joint
batches, failure replacement, latent cache. Also the manifest helpers the other training tests use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from PIL import Image

from lavie.curate.manifest import conform, read_manifest, write_manifest
from lavie.train.curriculum import CurriculumSampler, SourceSpec, Ticket, WeightSchedule
from lavie.train.data import ClipDataset, ClipGeometry, collate, cover_size, frame_offsets, load_source, read_clip

WORDS = ["red", "blue", "green", "bright", "dark", "moving", "still", "striped"]


def captioned_manifest(scenes_out: Path, out: Path) -> Path:
    """The scenes manifest with a caption per clip, as the captioning stage would add it."""
    table = read_manifest(scenes_out, "clips")
    captions = [f"a {WORDS[i % len(WORDS)]} {WORDS[(i * 3 + 1) % len(WORDS)]} test pattern clip" for i in range(table.num_rows)]
    table = table.append_column("caption", pa.array(captions, pa.string()))
    return write_manifest(table, out, "clips")


def image_manifest(out_dir: Path, count: int = 6, size: tuple[int, int] = (96, 64)) -> Path:
    """A LAION-style image manifest of small synthetic images (PNG and JPEG), plus one broken row."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    w, h = size
    for i in range(count):
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.stack([(xx * (i + 1) * 3) % 256, (yy * 4 + i * 40) % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        path = out_dir / f"image{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(pixels).save(path)
        rows.append(_image_row(path, f"a {WORDS[i % len(WORDS)]} synthetic image", w, h))
    missing = _image_row(out_dir / "gone.png", "a missing image", w, h)
    rows.append(missing)
    return write_manifest(conform(rows, "clips"), out_dir / "clips.parquet", "clips")


def _image_row(path: Path, caption: str, w: int, h: int) -> dict:
    return {"clip_id": path.stem, "kind": "image", "source_path": str(path), "clip_path": None, "start_frame": 0,
            "end_frame": 1, "num_frames": 1, "width": w, "height": h, "status": "ok", "keep": True, "caption": caption}


@pytest.fixture(scope="module")
def manifests(scenes_out, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("train-data")
    return {"clips": captioned_manifest(scenes_out, root / "captioned.parquet"), "images": image_manifest(root / "images")}


# --- tests ----------------------------------------------------------------------------------------


def test_frame_offsets_stride_follows_target_fps_and_shrinks_for_short_clips():
    rng = np.random.default_rng(0)
    center = ClipGeometry(num_frames=4, target_fps=8.0, crop="center")
    assert frame_offsets(100, 24.0, center, rng) == [45, 48, 51, 54]  # stride 3 = 24/8, centred window
    assert frame_offsets(7, 24.0, center, rng) == [0, 2, 4, 6]  # too short for stride 3: stride 2
    with pytest.raises(ValueError, match="3 frames, 4 are needed"):
        frame_offsets(3, 24.0, center, rng)
    random = ClipGeometry(num_frames=4, target_fps=8.0, crop="random")
    starts = {frame_offsets(100, 24.0, random, np.random.default_rng(s))[0] for s in range(20)}
    assert len(starts) > 5 and max(starts) <= 100 - 10


def test_cover_size_keeps_aspect_and_covers_target():
    assert cover_size(1920, 1080, 512, 320) == (569, 320)
    assert cover_size(720, 1280, 512, 320) == (512, 911)


def test_read_clip_decodes_only_the_range_at_reduced_size(manifests):
    source = load_source("clips", manifests["clips"], "video")
    table = read_manifest(manifests["clips"], "clips")
    usable = [k and s == "ok" for k, s in zip(table["keep"].to_pylist(), table["status"].to_pylist())]
    assert 0 < len(source) == sum(usable) < table.num_rows  # the 10-frame scene is keep=false
    geometry = ClipGeometry(num_frames=4, target_fps=8.0, height=32, width=48, crop="center")
    row = next(source.row(i) for i in range(len(source)) if source.row(i)["width"] == 1920)
    frames = read_clip(row, geometry, np.random.default_rng(0))
    assert frames.shape == (4, 32, 48, 3) and frames.dtype == np.uint8
    # the same frames through a full decode of the clip file, scaled to the same cover size
    from lavie.curate.video import iter_frames

    offsets = frame_offsets(row["num_frames"], row["fps"], geometry, np.random.default_rng(0))
    full = {i: f for i, f in iter_frames(row["clip_path"], size=cover_size(1920, 1080, 48, 32))}
    x0 = (cover_size(1920, 1080, 48, 32)[0] - 48) // 2
    expected = np.stack([full[o][:, x0 : x0 + 48] for o in offsets])
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 2


def test_joint_batch_has_images_with_their_own_captions(manifests):
    sources = [load_source("clips", manifests["clips"], "video"), load_source("images", manifests["images"], "image")]
    assert len(sources[1]) == 7  # the missing file is only found when read
    geometry = ClipGeometry(num_frames=4, height=16, width=24)
    dataset = ClipDataset(sources, geometry)
    sampler = CurriculumSampler([SourceSpec(0, "clips", WeightSchedule(1.0), len(sources[0]), "video")],
                                [SourceSpec(1, "images", WeightSchedule(1.0), len(sources[1]), "image")],
                                batch_size=2, n_images=3, seed=1, end_step=2)
    batch = collate([dataset[slot] for slot in next(iter(sampler))])
    assert batch["video"].shape == (2, 3, 4, 16, 24)
    assert batch["images"].shape == (2, 3, 3, 16, 24)
    assert -1.0 <= batch["video"].min() and batch["video"].max() <= 1.0 and batch["video"].std() > 0.05
    assert len(batch["image_captions"]) == 2 and all(len(c) == 3 for c in batch["image_captions"])
    assert all(c.endswith("synthetic image") for row in batch["image_captions"] for c in row)
    assert batch["sources"].count("images") == 6 and batch["sources"].count("clips") == 2


def test_failing_clip_is_logged_counted_and_replaced(manifests, caplog):
    sources = [load_source("images", manifests["images"], "image")]
    names = sources[0].rows.column("clip_id").to_pylist()
    broken = names.index("gone")
    dataset = ClipDataset(sources, ClipGeometry(num_frames=4, height=16, width=24), images_as_clips=True, max_translation=1.0)
    sample = dataset[(Ticket(0, broken, 5, "image"), [])]
    assert sample["failures"] >= 1 and sample["video"].shape == (3, 4, 16, 24)
    assert "failed to load, replaced" in caplog.text
    # images made clips by translation move between frames (LaVie App. C)
    assert (sample["video"][:, 0] - sample["video"][:, -1]).abs().max() > 0.05


def test_source_without_captions_is_a_clear_error(scenes_out):
    with pytest.raises(ValueError, match="no caption column"):
        load_source("raw", scenes_out, "video")


def test_latent_cache_is_written_once_and_read_back(manifests, tmp_path):
    from diffusers import AutoencoderKL

    from lavie.model.tiny import load_preset
    from lavie.train.latent_cache import LatentCache, build_latent_cache

    vae = AutoencoderKL(**load_preset("base")["vae"]).eval()
    table = read_manifest(manifests["clips"], "clips")
    small = table.filter(pc.equal(table["keep"], True)).slice(0, 3)
    path = write_manifest(small, tmp_path / "three.parquet", "clips")
    sources = [load_source("clips", path, "video")]
    geometry = ClipGeometry(num_frames=4, height=16, width=16, crop="center")
    dataset = ClipDataset(sources, geometry)
    cache = LatentCache(tmp_path / "cache", geometry.key)
    assert build_latent_cache(dataset, cache, vae) == (3, 0)
    assert build_latent_cache(dataset, cache, vae) == (0, 0)  # a rebuild skips what exists
    dataset.cache = cache
    sample = dataset[(Ticket(0, 1, 0, "video"), [])]
    assert sample["video_latents"].shape == (2, 4, 4, 8, 8)
    with torch.no_grad():
        mean = vae.encode(ClipDataset(sources, geometry).pixels(Ticket(0, 1, 0, "video")).transpose(0, 1)).latent_dist.mean
    assert torch.allclose(sample["video_latents"][0], mean.transpose(0, 1), atol=2e-2)
