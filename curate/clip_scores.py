"""One CLIP pass per clip: the LAION aesthetic score and the zero-shot Vimeo category.

LaVie §4.1 filters Vimeo25M on aesthetics and App. B reports them in buckets (<4, 4-6, >6) and
its ten Vimeo categories (Fig. 8). Both read the same thing, the open_clip image embeddings of a
clip's sampled frames (first, middle, last), so this stage decodes and embeds each surviving
clip once and derives both from those embeddings:

- `aesthetic`: the LAION predictor head (`curate/aesthetic.py`) on each frame's L2-normalised
  ViT-L/14 embedding, the mean (or min) over frames;
- `category` / `category_score`: the renormalised mean of the frames' embeddings against one
  text prompt per category (CLIP zero-shot), for rows without a category (or all, `overwrite`).
"""

from __future__ import annotations

import numpy as np
from pydantic import field_validator

from lavie.curate.category import DEFAULT_PROMPT, VIMEO_CATEGORIES
from lavie.curate.frames import FrameStage, decode_size
from lavie.curate.registry import register_stage
from lavie.curate.stage import Resources, StageConfig


DEFAULT_HEAD = "trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth"
REDUCTIONS = ("mean", "min")


class ClipScoresConfig(StageConfig):
    """The backbone, the aesthetic head and the category prompts; one place for each default."""

    clip_model: str = "ViT-L-14"  # open_clip architecture, or local-dir:/path, hf-hub:org/repo
    clip_pretrained: str | None = "openai"  # weights tag (local cache) or a checkpoint file
    head: str = DEFAULT_HEAD  # .pth/.safetensors path, or org/repo/file in the local HF cache
    frames: int = 3  # frames per clip: first, middle, last
    reduce: str = "mean"  # mean | min of the frame scores
    aesthetic: bool = True
    category: bool = True
    categories: list[str] = list(VIMEO_CATEGORIES)
    prompt: str = DEFAULT_PROMPT
    overwrite_category: bool = False  # also re-label rows that have a category (a folder name)

    @field_validator("reduce")
    @classmethod
    def _reduce(cls, value: str) -> str:
        if value not in REDUCTIONS:
            raise ValueError(f"clip.reduce must be one of {REDUCTIONS}, got {value!r}")
        return value

    @field_validator("frames")
    @classmethod
    def _frames(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"clip.frames must be >= 1, got {value}")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if "{category}" not in value:
            raise ValueError(f"clip.prompt must contain '{{category}}', got {value!r}")
        return value

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError(f"clip.categories needs at least two names, got {value}")
        return value


def _has_category(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and str(value) != ""


@register_stage("clip")
class ClipScoresStage(FrameStage):
    """Adds `aesthetic`, `category` and `category_score` from one embedding pass."""

    Config = ClipScoresConfig
    RESOURCES = Resources(cpus=1.0, gpus=1.0, holds_model=True)
    default_batch_size = 16

    def __init__(self, config: ClipScoresConfig | None = None):
        super().__init__(config)
        c = self.config
        self.frames = c.frames
        self.output_columns = (("aesthetic",) if c.aesthetic else ()) + (
            ("category", "category_score") if c.category else ())
        self.backbone = self.head = self.text_emb = None

    @classmethod
    def check_available(cls, config: ClipScoresConfig) -> str | None:
        from lavie.curate.aesthetic import head_unavailable
        from lavie.curate.clip_backbone import clip_unavailable

        if config.aesthetic and (reason := head_unavailable(config.head)):
            return reason
        return clip_unavailable(config.clip_model, config.clip_pretrained, "clip")

    def setup(self) -> None:
        from lavie.curate.aesthetic import AestheticHead, load_head_state
        from lavie.curate.clip_backbone import ClipBackbone

        c = self.config
        # The head first: it is small, and a missing head should not cost a backbone load.
        state = load_head_state(c.head) if c.aesthetic else None
        self.backbone = ClipBackbone(c.clip_model, c.clip_pretrained, stage="clip")
        if state is not None:
            in_dim = int(state["layers.0.weight"].shape[1]) if "layers.0.weight" in state else None
            if in_dim != self.backbone.embed_dim:
                raise ValueError(
                    f"clip.head {c.head!r} takes {in_dim}-d embeddings but {c.clip_model!r} gives "
                    f"{self.backbone.embed_dim}-d ones; the LAION head needs ViT-L-14 (768)")
            self.head = AestheticHead(in_dim)
            self.head.load_state_dict(state)  # strict: a file of another architecture is an error
            self.head.to(self.backbone.device).eval()
        if c.category:
            # The text side is fixed: embed the prompts once per worker.
            self.text_emb = self.backbone.encode_texts([c.prompt.format(category=k) for k in c.categories])  # (C, D)

    def frame_size(self, width, height):
        return decode_size(width, height, self.backbone.image_size if self.backbone else 224)

    def passthrough(self, batch, column, row):
        if column == "category" and "category" in batch and _has_category(batch["category"][row]):
            return str(batch["category"][row])
        return None

    def run(self, frames, rows, batch):
        import torch

        if self.backbone is None:
            self.setup()
        counts = [len(f) for f in frames]
        with torch.inference_mode():
            emb = self.backbone.encode_frames(np.concatenate(frames))  # (sum k, D), unit norm
            out: dict[str, list] = {}
            if self.head is not None:
                scores = self.head(emb).double().cpu()  # (sum k,)
                reduce = torch.mean if self.config.reduce == "mean" else torch.min
                out["aesthetic"] = [float(reduce(s)) for s in torch.split(scores, counts)]
            if self.text_emb is not None:
                # One embedding per clip: the renormalised mean of its frames'.
                clip_emb = torch.stack([e.mean(0) for e in torch.split(emb, counts)])  # (B, D)
                clip_emb = torch.nn.functional.normalize(clip_emb, dim=-1)
                probs = (self.backbone.logit_scale * clip_emb @ self.text_emb.T).softmax(-1).double().cpu()  # (B, C)
                score, index = probs.max(-1)
                keep_given = [not self.config.overwrite_category and "category" in batch
                              and _has_category(batch["category"][i]) for i in rows]
                out["category"] = [str(batch["category"][i]) if given else self.config.categories[int(k)]
                                   for i, given, k in zip(rows, keep_given, index)]
                out["category_score"] = [None if given else float(s) for given, s in zip(keep_given, score)]
        return out
