"""Clip captions from a vision-language model (LaVie §4.1: Vimeo25M's text-video pairs are
generated automatically by a video captioner, Videochat; App. B: most captions are ~10 words).

N frames spread over each clip go to a transformers VLM (`AutoProcessor` +
`AutoModelForImageTextToText`) through the model's own chat template, as one video with its frame
timestamps (`frames_as="video"`) or as N images. Clips are captioned in batches with greedy
decoding by default, so a re-run gives the same captions. With `do_sample=True` each clip is
generated alone under a seed made of `seed` and its `clip_id`, so sampled captions do not depend on
how clips were batched or spread over workers either.

Default model: Qwen/Qwen2.5-VL-3B-Instruct. It reads frames as a video with absolute time
positions (multimodal RoPE) and writes the most accurate short descriptions of the small VLMs;
HuggingFaceTB/SmolVLM2-2.2B-Instruct is the throughput choice (fewer visual tokens per frame, about
a third less memory) for large corpora or small GPUs: `--set stages.caption.model=HuggingFaceTB/SmolVLM2-2.2B-Instruct`.
"""

from __future__ import annotations

import os
import zlib

from typing import Literal

import numpy as np

from lavie.curate.frames import FrameStage
from lavie.curate.registry import register_stage
from lavie.curate.stage import Resources, StageConfig

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
DEFAULT_PROMPT = "Describe this video in one sentence: the main subject, the action and the scene."
FRAMES_AS = ("video", "images")


def model_unavailable(model: str) -> str | None:
    """Why `model` (hub id or local folder) is not available locally, or None; loads nothing."""
    how = (f"pass a local folder with --set stages.caption.model=/local/dir, or a hub id whose files are "
           f"in the Hugging Face cache (HF_HOME; `huggingface-cli download {model}` on a machine "
           f"with network)")
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            return f"caption model {model!r}: folder has no config.json; {how}"
        return None
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        return f"caption model {model!r}: no such folder; {how}"
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(repo_id=model, filename="config.json"), str):
        return f"caption model {model!r} is not in the local Hugging Face cache; {how}"
    return None


def long_side_size(width, height, long_side: int) -> tuple[int, int] | None:
    """(w, h) with the long side at `long_side` (never upscaled), even; None keeps the size."""
    if width is None or height is None or int(width) <= 0 or int(height) <= 0:
        return None
    width, height = int(width), int(height)
    if max(width, height) <= long_side:
        return None
    scale = long_side / max(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def word_count(caption: str) -> int:
    return len(caption.split())


class CaptionConfig(StageConfig):
    """The captioning model and how it is asked; one place for each default."""

    model: str = DEFAULT_MODEL  # hub id (in the local HF cache) or a local folder
    frames: int = 4  # frames sampled per clip
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 64
    do_sample: bool = False  # greedy by default: a re-run gives the same captions
    temperature: float = 0.7  # sampling only
    top_p: float = 0.9  # sampling only
    seed: int = 0  # sampling only: with the clip id, the seed of each clip's caption
    frame_size: int = 448  # long side frames are decoded at
    frames_as: Literal["video", "images"] = "video"  # how frames reach the processor
    generate_batch: int = 8  # clips per generate() call (greedy)
    overwrite: bool = False  # also caption clips that already have a caption (from metadata)


@register_stage("caption")
class CaptionStage(FrameStage):
    """Adds `caption` (string), `caption_words` (int32) and `caption_source` to surviving clips."""

    Config = CaptionConfig
    RESOURCES = Resources(cpus=1.0, gpus=1.0, holds_model=True)
    default_batch_size = 32
    output_columns = ("caption", "caption_words", "caption_source")

    def __init__(self, config: CaptionConfig | None = None):
        super().__init__(config)
        c = self.config
        for key in ("frames", "max_new_tokens", "frame_size", "generate_batch"):
            if int(getattr(c, key)) < 1:
                raise ValueError(f"caption.{key} must be >= 1, got {getattr(c, key)}")
        self.frames = int(c.frames)
        self.prompt = c.prompt
        self.max_new_tokens = int(c.max_new_tokens)
        self.do_sample = bool(c.do_sample)
        self.temperature = float(c.temperature)
        self.top_p = float(c.top_p)
        self.seed = int(c.seed)
        self.long_side = int(c.frame_size)
        self.frames_as = c.frames_as
        self.batch_size = int(c.generate_batch)
        self.model_name = c.model
        self.model = None

    def setup(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from lavie.curate.clip_backbone import default_device

        model = self.model_name
        self.device = default_device()
        path = os.path.expanduser(model)
        if model.startswith(("/", ".", "~")) and not os.path.isdir(path):
            raise FileNotFoundError(model_unavailable(model))
        # bf16 on GPUs (what the VLMs are published in); fp32 on CPU, where bf16 matmuls are slow.
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(path if os.path.isdir(path) else model)
            self.model = AutoModelForImageTextToText.from_pretrained(
                path if os.path.isdir(path) else model, dtype=dtype
            ).to(self.device).eval()
        except OSError as exc:  # not cached and no network, or no such repo
            raise FileNotFoundError(f"{model_unavailable(model) or f'caption model {model!r}'} ({exc})") from exc
        # Decoder-only batched generation: pad on the left so every prompt ends where
        # generation starts.
        self.processor.tokenizer.padding_side = "left"

    def wants(self, batch, row) -> bool:
        if self.config.overwrite or "caption" not in batch:
            return True
        caption = batch["caption"][row]
        return caption is None or (isinstance(caption, float) and np.isnan(caption))

    def passthrough(self, batch, column, row):
        if column in batch:
            value = batch[column][row]
            return None if isinstance(value, float) and np.isnan(value) else value
        return None

    @classmethod
    def check_available(cls, config: CaptionConfig) -> str | None:
        """Why this stage's model is not available locally, or None; loads nothing."""
        return model_unavailable(config.model)

    def frame_size(self, width, height) -> tuple[int, int] | None:
        return long_side_size(width, height, self.long_side)

    def run(self, frames: list[np.ndarray], rows: list[int], batch: dict[str, np.ndarray]) -> dict[str, list]:
        import torch

        if self.model is None:
            self.setup()
        captions: list[str | None] = [None] * len(rows)
        failed: list[str | None] = [None] * len(rows)
        # Greedy: batches of clips. Sampling: one clip per call under its own seed.
        step = 1 if self.do_sample else self.batch_size
        for start in range(0, len(rows), step):
            part = range(start, min(start + step, len(rows)))
            try:
                texts = self.generate([frames[j] for j in part], [rows[j] for j in part], batch)
            except torch.OutOfMemoryError:
                raise  # the configuration's fault, not the clip's: lower caption.batch_size
            except Exception as exc:  # a clip the processor or model cannot take fails alone
                for j in part:
                    failed[j] = f"captioning failed: {type(exc).__name__}: {exc}"
                continue
            for j, text in zip(part, texts):
                captions[j] = text
        return {
            "caption": captions,
            "caption_words": [None if c is None else word_count(c) for c in captions],
            "caption_source": [None if c is None else f"model:{self.model_name}" for c in captions],
            "_error": failed,
        }

    def generate(self, clips: list[np.ndarray], rows: list[int], batch: dict[str, np.ndarray]) -> list[str]:
        texts = [
            self.processor.apply_chat_template(
                [{"role": "user", "content": self._content(len(clip))}], add_generation_prompt=True, tokenize=False
            )
            for clip in clips
        ]
        if self.frames_as == "video":
            inputs = self.processor(
                text=texts, videos=list(clips), video_metadata=[self._metadata(batch, i) for i in rows],
                do_sample_frames=False, return_tensors="pt", padding=True,
            )
        else:
            inputs = self.processor(text=texts, images=[list(c) for c in clips], return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        options = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            import torch

            options.update(temperature=self.temperature, top_p=self.top_p)
            torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(str(batch["clip_id"][rows[0]]).encode()))
        out = self.model.generate(**inputs, **options)  # (B, prompt + new)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]

    def _content(self, num_frames: int) -> list[dict]:
        media = [{"type": "video"}] if self.frames_as == "video" else [{"type": "image"}] * num_frames
        return media + [{"type": "text", "text": self.prompt}]

    def _metadata(self, batch: dict[str, np.ndarray], row: int):
        """Where the sampled frames sit in the clip, so the model sees their timestamps."""
        from transformers.video_utils import VideoMetadata

        from lavie.curate.video import frame_positions

        num_frames = int(batch["num_frames"][row])
        fps = batch["fps"][row] if "fps" in batch else None
        fps = float(fps) if fps is not None and np.isfinite(float(fps)) and float(fps) > 0 else 24.0
        width = batch["width"][row] if "width" in batch else None
        height = batch["height"][row] if "height" in batch else None
        return VideoMetadata(
            total_num_frames=num_frames, fps=fps, duration=num_frames / fps,
            frames_indices=frame_positions(num_frames, self.frames),
            width=None if width is None else int(width), height=None if height is None else int(height),
        )
