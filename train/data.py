"""Manifest-backed training data: clips decoded from their frame range, images, joint batches.

A clip is read the cheap way (LaVie App. C preprocessing): PyAV seeks to the key frame before
the clip's first wanted frame, stops after its last one, and swscale scales each frame straight
to the size the crop needs (`lavie.curate.video.read_frames`), so a 1080p source never becomes a
full-size RGB array. Frames are taken at a stride that brings the clip to `target_fps`, then
cropped to `height x width` and scaled to [-1, 1].

Every random choice (frame window, crop window, camera walk, replacement rows) comes from the
ticket's seed, never from a worker's global RNG, so any DataLoader worker count gives the same
batches. A clip that fails to decode is logged, counted and replaced by another row of its source.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from lavie.curate.manifest import read_manifest
from lavie.curate.video import display_size, read_frames

from .curriculum import Ticket
from .image_folder import image_folder_table, is_image_folder

logger = logging.getLogger(__name__)

ROW_COLUMNS = ["clip_id", "kind", "source_path", "clip_path", "start_frame", "num_frames", "fps", "width", "height", "caption"]


@dataclass(frozen=True)
class ClipGeometry:
    """What a training clip looks like: frame count, frame rate, size and crop placement."""

    num_frames: int = 16
    target_fps: float = 8.0
    height: int = 320
    width: int = 512
    crop: str = "random"  # random | center

    @property
    def key(self) -> str:
        return f"{self.num_frames}f-{self.target_fps:g}fps-{self.height}x{self.width}-{self.crop}"


# --- sources ----------------------------------------------------------------------------------


@dataclass
class Source:
    """The usable rows of one manifest: keep=true, status ok, of the source's kind, captioned."""

    name: str
    kind: str
    rows: pa.Table

    def __len__(self) -> int:
        return self.rows.num_rows

    def row(self, i: int) -> dict:
        return self.rows.slice(i, 1).to_pylist()[0]


def load_source(name: str, manifest: str | Path, kind: str) -> Source:
    """Read a clips manifest, or for `kind: image` also a folder of captioned images (`a.jpg` +
    `a.txt`), and keep the rows a trainer can use."""
    table = image_folder_table(manifest) if kind == "image" and is_image_folder(manifest) else read_manifest(manifest, "clips")
    if "caption" not in table.column_names:
        raise ValueError(f"source {name!r}: manifest {manifest} has no caption column; caption it first (lavie-curate caption)")
    usable = pc.and_(
        pc.and_(pc.fill_null(pc.equal(table["keep"], True), False), pc.equal(table["status"], "ok")),
        pc.and_(pc.equal(table["kind"], kind), pc.fill_null(pc.greater(pc.utf8_length(table["caption"]), 0), False)),
    )
    rows = table.filter(usable).select(ROW_COLUMNS)
    dropped = table.num_rows - rows.num_rows
    if dropped:
        logger.info("source %s: %d of %d rows unused (keep=false, error, other kind, or no caption)", name, dropped, table.num_rows)
    return Source(name, kind, rows.combine_chunks())


# --- frame and crop windows ---------------------------------------------------------------------


def frame_offsets(clip_frames: int, fps: float | None, geometry: ClipGeometry, rng: np.random.Generator) -> list[int]:
    """Offsets of `num_frames` frames in a clip of `clip_frames`, `round(fps / target_fps)` apart;
    the stride shrinks when the clip is too short for it. Random or centred window."""
    t = geometry.num_frames
    stride = max(1, round(fps / geometry.target_fps)) if fps and geometry.target_fps > 0 else 1
    if t > 1 and (t - 1) * stride + 1 > clip_frames:
        stride = max(1, (clip_frames - 1) // (t - 1))
    span = (t - 1) * stride + 1
    if span > clip_frames:
        raise ValueError(f"clip has {clip_frames} frames, {t} are needed")
    slack = clip_frames - span
    start = int(rng.integers(slack + 1)) if geometry.crop == "random" else slack // 2
    return [start + i * stride for i in range(t)]


def cover_size(width: int, height: int, out_w: int, out_h: int) -> tuple[int, int]:
    """The smallest size with the source's aspect that covers `out_w x out_h`."""
    scale = max(out_w / width, out_h / height)
    return max(out_w, math.ceil(width * scale - 1e-6)), max(out_h, math.ceil(height * scale - 1e-6))


def crop_origin(size: tuple[int, int], out_w: int, out_h: int, crop: str, rng: np.random.Generator) -> tuple[int, int]:
    w, h = size
    if crop == "random":
        return int(rng.integers(w - out_w + 1)), int(rng.integers(h - out_h + 1))
    return (w - out_w) // 2, (h - out_h) // 2


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]."""
    frames = frames if frames.flags.writeable and frames.flags.c_contiguous else np.array(frames)
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)


# --- readers ----------------------------------------------------------------------------------


def read_clip(row: dict, geometry: ClipGeometry, rng: np.random.Generator) -> np.ndarray:
    """A manifest clip as (T, H, W, 3) uint8: seek, decode the frame range, scale in swscale, crop."""
    offsets = frame_offsets(int(row["num_frames"]), row["fps"], geometry, rng)
    if row["clip_path"]:
        path, first = row["clip_path"], 0
    else:  # a virtual clip: the source over the clip's frame range
        path, first = row["source_path"], int(row["start_frame"] or 0)
    width, height = (row["width"], row["height"]) if row["width"] and row["height"] else display_size(path)
    size = cover_size(width, height, geometry.width, geometry.height)
    frames = read_frames(path, [first + o for o in offsets], size=size)  # (T, h', w', 3)
    x, y = crop_origin(size, geometry.width, geometry.height, geometry.crop, rng)
    return frames[:, y : y + geometry.height, x : x + geometry.width]


def open_image(path: str, min_size: tuple[int, int]) -> Image.Image:
    """An RGB image, JPEG-decoded at a reduced scale where that still covers `min_size`."""
    image = Image.open(path)
    w, h = image.size
    image.draft("RGB", cover_size(w, h, *min_size))  # JPEG DCT scaling; a no-op for other formats
    return image.convert("RGB")


def read_image(row: dict, geometry: ClipGeometry, rng: np.random.Generator) -> np.ndarray:
    """A manifest image as one frame, (1, H, W, 3) uint8."""
    image = open_image(row["source_path"], (geometry.width, geometry.height))
    size = cover_size(*image.size, geometry.width, geometry.height)
    image = image.resize(size, Image.BICUBIC, reducing_gap=2.0)
    x, y = crop_origin(size, geometry.width, geometry.height, geometry.crop, rng)
    return np.asarray(image)[None, y : y + geometry.height, x : x + geometry.width]


def image_as_clip(row: dict, geometry: ClipGeometry, max_translation: float, rng: np.random.Generator) -> np.ndarray:
    """An image turned into a clip by random translations that mimic a hand-held camera
    (LaVie App. C, VSR training): the crop window takes a random walk of at most
    `max_translation` pixels per frame and axis. Returns (T, H, W, 3) uint8."""
    t = geometry.num_frames
    reach = math.ceil(max_translation * (t - 1))
    out_w, out_h = geometry.width + 2 * reach, geometry.height + 2 * reach
    image = open_image(row["source_path"], (out_w, out_h))
    size = cover_size(*image.size, out_w, out_h)
    pixels = np.asarray(image.resize(size, Image.BICUBIC, reducing_gap=2.0))
    x0, y0 = crop_origin(size, out_w, out_h, geometry.crop, rng)
    walk = np.cumsum(rng.uniform(-max_translation, max_translation, size=(t, 2)), axis=0)  # (T, 2)
    walk = np.rint(walk - walk[0]).astype(int).clip(-reach, reach)
    frames = [pixels[y0 + reach + dy : y0 + reach + dy + geometry.height, x0 + reach + dx : x0 + reach + dx + geometry.width]
              for dx, dy in walk]
    return np.stack(frames)


# --- dataset ------------------------------------------------------------------------------------


class DecodeError(RuntimeError):
    """A source whose rows keep failing: the run stops rather than train on nothing."""


class ClipDataset(torch.utils.data.Dataset):
    """Maps a sampler's `(video ticket, [image tickets])` to one training sample.

    Returns a dict: `video` (3, T, H, W) in [-1, 1] (or `video_latents` (2, C, T, h, w), the cached
    posterior mean and std), `caption`, `images` (3, M, H, W) / `image_latents` and
    `image_captions` for joint training, `sources` (names, for the realised mix) and `failures`.

    Args:
        sources: all sources, indexed as the tickets' `source`.
        geometry: frames, fps and size of a clip.
        image_geometry: the same for joint-training images (one frame).
        images_as_clips: turn image tickets drawn as videos into clips by translation (vsr).
        cache: a `LatentCache` to read latents from instead of decoding (built beforehand).
    """

    def __init__(self, sources: list[Source], geometry: ClipGeometry, images_as_clips: bool = False,
                 max_translation: float = 2.0, max_retries: int = 8, cache=None):
        self.sources = sources
        self.geometry = geometry
        self.image_geometry = ClipGeometry(1, geometry.target_fps, geometry.height, geometry.width, geometry.crop)
        self.images_as_clips = images_as_clips
        self.max_translation = max_translation
        self.max_retries = max_retries
        self.cache = cache

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def pixels(self, ticket: Ticket, as_clip: bool = True) -> torch.Tensor:
        """The frames of one ticket, (3, T, H, W) in [-1, 1]; raises on a decode failure."""
        source = self.sources[ticket.source]
        row = source.row(ticket.row)
        rng = np.random.default_rng(ticket.seed)
        if source.kind == "video":
            frames = read_clip(row, self.geometry, rng)
        elif as_clip:
            frames = image_as_clip(row, self.geometry, self.max_translation, rng)
        else:
            frames = read_image(row, self.image_geometry, rng)
        return to_tensor(frames)

    def _load(self, ticket: Ticket, as_clip: bool) -> tuple[dict, int]:
        """One ticket's tensor and caption, replacing failing rows from the same source."""
        source = self.sources[ticket.source]
        failures = 0
        for attempt in range(self.max_retries + 1):
            row = source.row(ticket.row)
            try:
                if self.cache is not None:
                    item = {"latents": self.cache.load(source.name, row["clip_id"])}
                else:
                    item = {"pixels": self.pixels(ticket, as_clip)}
                item["caption"] = row["caption"]
                item["source"] = source.name
                return item, failures
            except Exception as err:  # a bad file must not end the epoch: log, count, replace
                failures += 1
                logger.warning("source %s row %d (%s) failed to load, replaced: %s", source.name, ticket.row,
                               row["clip_path"] or row["source_path"], err)
                rng = np.random.default_rng([ticket.seed, attempt + 1])
                ticket = Ticket(ticket.source, int(rng.integers(len(source))), int(rng.integers(2**62)), ticket.kind)
        raise DecodeError(f"source {source.name}: {self.max_retries + 1} rows in a row failed to load; see the warnings above")

    def __getitem__(self, slot: tuple[Ticket, list[Ticket]]) -> dict:
        video_ticket, image_tickets = slot
        video, failures = self._load(video_ticket, as_clip=True)
        sample = {"caption": video["caption"], "sources": [video["source"]]}
        key = "video_latents" if "latents" in video else "video"
        sample[key] = video.get("latents", video.get("pixels"))
        images = []
        for ticket in image_tickets:
            image, n = self._load(ticket, as_clip=False)
            failures += n
            images.append(image)
            sample["sources"].append(image["source"])
        if images:
            key = "image_latents" if "latents" in images[0] else "images"
            sample[key] = torch.cat([im.get("latents", im.get("pixels")) for im in images], dim=-3)  # (..., M, H, W)
            sample["image_captions"] = [im["caption"] for im in images]
        sample["failures"] = failures
        return sample


def collate(samples: list[dict]) -> dict:
    """Stack a micro-batch: tensors along a new batch axis, captions and names as lists."""
    batch = {"captions": [s["caption"] for s in samples], "sources": [n for s in samples for n in s["sources"]],
             "failures": sum(s["failures"] for s in samples)}
    for key in ("video", "video_latents", "images", "image_latents"):
        if key in samples[0]:
            batch[key] = torch.stack([s[key] for s in samples])
    if "image_captions" in samples[0]:
        batch["image_captions"] = [s["image_captions"] for s in samples]
    return batch
