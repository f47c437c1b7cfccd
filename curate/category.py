"""Zero-shot video category for the corpus report (LaVie §4.1, App. B Fig. 8).

Vimeo25M's videos come in ten Vimeo categories. When a raw directory is not organised by
category, the category is read off the clip: the mean of its frames' open_clip image embeddings
against the text embeddings of one prompt per category, as in CLIP's zero-shot classification.
The open_clip model is loaded by the same code as the aesthetic scorer's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lavie.curate.clip_backbone import ClipBackbone, FrameModelStage, clip_unavailable, decode_size
from lavie.curate.registry import register_stage

VIMEO_CATEGORIES = (
    "Ads and Commercials", "Animation", "Branded Content", "Comedy", "Documentary",
    "Experimental", "Music", "Narrative", "Sports", "Travel",
)
DEFAULT_PROMPT = "a frame from a {category} video"


def _has_category(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and str(value) != ""


@register_stage("category")
class CategoryStage(FrameModelStage):
    """Adds `category` (where a row has none, or everywhere with `overwrite`) and `category_score`.

    `category_score` is the softmax probability of the chosen category among the candidates; it
    is null where the category was kept from the input (e.g. the raw folder's name), since those
    rows are not looked at.
    """

    output_columns = ("category", "category_score")

    def __init__(
        self,
        clip_model: str = "ViT-L-14",
        clip_pretrained: str | None = "openai",
        frames: int = 3,
        categories: Sequence[str] = VIMEO_CATEGORIES,
        prompt: str = DEFAULT_PROMPT,
        overwrite: bool = False,
    ):
        if "{category}" not in prompt:
            raise ValueError(f"category.prompt must contain '{{category}}', got {prompt!r}")
        if len(categories) < 2:
            raise ValueError(f"category.categories needs at least two names, got {list(categories)}")
        if frames < 1:
            raise ValueError(f"category.frames must be >= 1, got {frames}")
        self.frames = frames
        self.categories = [str(c) for c in categories]
        self.overwrite = overwrite
        self.backbone = ClipBackbone(clip_model, clip_pretrained, stage="category")
        # The text side is fixed: embed the prompts once per worker.
        self.text_emb = self.backbone.encode_texts([prompt.format(category=c) for c in self.categories])  # (C, D)

    @classmethod
    def check_available(cls, clip_model: str = "ViT-L-14", clip_pretrained: str | None = "openai",
                        **_: object) -> str | None:
        """Why this stage's model is not available locally, or None; loads nothing."""
        return clip_unavailable(clip_model, clip_pretrained, "category")

    def frame_size(self, width, height) -> tuple[int, int] | None:
        return decode_size(width, height, self.backbone.image_size)

    def wants(self, batch: dict[str, np.ndarray], row: int) -> bool:
        return self.overwrite or "category" not in batch or not _has_category(batch["category"][row])

    def passthrough(self, batch: dict[str, np.ndarray], column: str, row: int):
        if column == "category" and "category" in batch and _has_category(batch["category"][row]):
            return str(batch["category"][row])
        return None

    def run(self, frames: list[np.ndarray], rows: list[int], batch: dict[str, np.ndarray]) -> dict[str, list]:
        counts = [len(f) for f in frames]
        emb = self.backbone.encode_frames(np.concatenate(frames))  # (sum k, D)
        # One embedding per clip: the renormalised mean of its frames'.
        clip_emb = torch.stack([e.mean(0) for e in torch.split(emb, counts)])  # (B, D)
        clip_emb = torch.nn.functional.normalize(clip_emb, dim=-1)
        probs = (self.backbone.logit_scale * clip_emb @ self.text_emb.T).softmax(-1).double().cpu()  # (B, C)
        score, index = probs.max(-1)
        return {
            "category": [self.categories[int(i)] for i in index],
            "category_score": [float(s) for s in score],
        }
