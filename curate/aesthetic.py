"""The aesthetic scorer: LAION's aesthetic predictor over k frames of each clip.

LaVie §4.1 filters Vimeo25M on aesthetic scores and App. B reports them in buckets (<4, 4-6, >6);
the scores are those of the LAION aesthetic predictor: an MLP head (768-1024-128-64-16-1) on
L2-normalised OpenAI CLIP ViT-L/14 image embeddings. A clip's score is the mean (or min) of the
scores of its first, middle and last frames.

The head loads as published (a torch state dict `layers.0.weight` ... `layers.7.bias`, e.g.
`sac+logos+ava1-l14-linearMSE.pth`) or as a safetensors copy, from a local file or from the hub
(`org/repo/filename`). The default is the copy TRL's DDPO example publishes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


from lavie.curate.clip_scores import DEFAULT_HEAD, REDUCTIONS  # noqa: E402,F401 (defined with the stage)


class AestheticHead(nn.Module):
    """LAION's MLP head: no activations between the linears, as it was trained.

    The layer indices (0, 2, 4, 6, 7) are those of the published state dict.
    """

    def __init__(self, in_dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.layers(emb).squeeze(-1)  # (N, D) -> (N,)


def _split_hub_ref(head: str) -> tuple[str, str]:
    """"org/repo/file.pth" -> ("org/repo", "file.pth")."""
    parts = head.split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(
            f"aesthetic.head={head!r} is neither an existing file nor a hub reference 'org/repo/filename'"
        )
    return "/".join(parts[:2]), "/".join(parts[2:])


def _missing_head_message(head: str, reason: str) -> str:
    return (f"aesthetic head {head!r} is not available ({reason}); supply it with "
            f"--set stages.clip.head=/path/to/sac+logos+ava1-l14-linearMSE.pth (or a .safetensors copy), "
            f"or a hub reference such as {DEFAULT_HEAD!r} in the local Hugging Face cache (HF_HOME)")


def head_unavailable(head: str) -> str | None:
    if os.path.isfile(os.path.expanduser(head)):
        return None
    if head.startswith(("/", ".", "~")):
        return _missing_head_message(head, "no such file")
    from huggingface_hub import try_to_load_from_cache

    repo, filename = _split_hub_ref(head)
    if not isinstance(try_to_load_from_cache(repo_id=repo, filename=filename), str):
        return _missing_head_message(head, "not in the local Hugging Face cache")
    return None


def load_head_state(head: str) -> dict[str, torch.Tensor]:
    """The head's state dict from a local .pth/.safetensors file or a hub reference."""
    path = os.path.expanduser(head)
    if not os.path.isfile(path):
        if head.startswith(("/", ".", "~")):
            raise FileNotFoundError(_missing_head_message(head, "no such file"))
        from huggingface_hub import hf_hub_download

        repo, filename = _split_hub_ref(head)
        try:
            path = hf_hub_download(repo_id=repo, filename=filename)
        except Exception as exc:  # offline, unknown repo, no such file: all mean "not here"
            raise FileNotFoundError(_missing_head_message(head, f"{type(exc).__name__}")) from exc
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state
