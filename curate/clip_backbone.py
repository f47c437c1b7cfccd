"""The open_clip backbone: loaded once, it embeds frames and texts for the `clip` stage.

The aesthetic score and the zero-shot category both read the same image embeddings of a clip's
frames, so one backbone and one embedding pass serve both (`curate/clip_scores.py`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lavie.curate.frames import decode_size  # noqa: F401 (re-exported)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _looks_like_path(value: str) -> bool:
    # Tags and hub ids never start like a path; a tag never holds a separator.
    return value.startswith((".", "~")) or os.sep in value


# -- the open_clip backbone ---------------------------------------------------------------------


def clip_unavailable(model: str, pretrained: str | None, stage: str) -> str | None:
    """Why open_clip `model` + `pretrained` cannot be built from local files, or None if it can.

    Looks only at the file system and the hub cache; nothing is loaded or downloaded.
    """
    import open_clip

    how = (f"pass a local checkpoint with --set stages.{stage}.clip_pretrained=/path/to/open_clip_model.bin "
           f"(or a 'local-dir:/path' model with open_clip_config.json) or fill the Hugging Face cache "
           f"(HF_HOME) with it")
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):])
        if not (folder / "open_clip_config.json").is_file():
            return f"open_clip model {model!r}: {folder}/open_clip_config.json not found; {how}"
        return None
    if model.startswith("hf-hub:"):
        repo = model[len("hf-hub:"):]
        if _hub_cached(repo, "open_clip_config.json") is None:
            return f"open_clip model {model!r} is not in the local Hugging Face cache; {how}"
        return None
    if open_clip.get_model_config(model) is None:
        return f"unknown open_clip model {model!r} ({stage}.clip_model); choose one of open_clip.list_models()"
    if not pretrained:
        # A scoring model with random weights would write scores that mean nothing.
        return f"{stage}.clip_pretrained is empty: {model!r} needs weights (a tag such as 'openai' or a file)"
    if os.path.isfile(os.path.expanduser(pretrained)):
        return None
    tag = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag:
        if _looks_like_path(pretrained):
            return f"open_clip weights {pretrained!r} for {model!r} not found; {how}"
        tags = open_clip.list_pretrained_tags_by_model(model)
        return (f"{stage}.clip_pretrained={pretrained!r} is neither a file nor a known tag of {model!r}; "
                f"tags: {tags}")
    hub = tag.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        for name in ([filename] if filename else []) + ["open_clip_model.safetensors",
                                                         "open_clip_pytorch_model.bin"]:
            if _hub_cached(repo, name) is not None:
                return None
    url = tag.get("url", "")
    if url and (Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)).is_file():
        return None
    return f"open_clip weights {model!r}/{pretrained!r} are not in the local cache; {how}"


def _hub_cached(repo: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo, filename=filename)
    return found if isinstance(found, str) else None


class ClipBackbone:
    """An open_clip model with its inference transform and tokenizer, loaded once.

    `model` is an open_clip name ("ViT-L-14"), or "local-dir:/path" / "hf-hub:org/repo";
    `pretrained` is a tag ("openai") or a checkpoint file. A tag that was trained with QuickGELU
    (OpenAI's weights) gets it: the LAION aesthetic head was fit on exactly those embeddings.
    """

    def __init__(self, model: str, pretrained: str | None, stage: str, device: torch.device | None = None):
        import open_clip

        reason = clip_unavailable(model, pretrained, stage)
        if reason is not None:
            raise FileNotFoundError(reason)
        self.device = device or default_device()
        quick_gelu = False
        if pretrained and not model.startswith(("local-dir:", "hf-hub:")):
            quick_gelu = bool(open_clip.get_pretrained_cfg(model, pretrained).get("quick_gelu", False))
        # fp16 halves memory and time on a GPU; CPUs run fp32 (fp16 matmuls are slow there).
        precision = "fp16" if self.device.type == "cuda" else "fp32"
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained or None, device=self.device, precision=precision,
                force_quick_gelu=quick_gelu,
            )
        except (RuntimeError, OSError) as exc:
            raise FileNotFoundError(
                f"open_clip model {model!r} with weights {pretrained!r} could not be loaded ({exc}); "
                f"pass --set stages.{stage}.clip_pretrained=/path/to/weights or a cached tag"
            ) from exc
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.embed_dim = int(self.model.visual.output_dim)

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray, chunk: int = 64) -> torch.Tensor:
        """L2-normalised image embeddings of RGB frames `(N, H, W, 3)` uint8 -> `(N, D)` float32."""
        from PIL import Image

        out = []
        for start in range(0, len(frames), chunk):
            pixels = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames[start:start + chunk]])
            pixels = pixels.to(self.device, dtype=next(self.model.parameters()).dtype)  # (n, 3, S, S)
            emb = self.model.encode_image(pixels).float()  # (n, D)
            out.append(torch.nn.functional.normalize(emb, dim=-1))
        return torch.cat(out)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings `(T, D)` float32."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        emb = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())


