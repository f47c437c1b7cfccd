"""Optional latent caching: the VAE posterior of every clip written once, read by every later epoch.

A cached clip is the clip's centred frame window and centre crop (a cache holds one view per clip),
stored as the posterior mean and standard deviation, so training still draws a fresh latent sample
per step as the diffusers text-to-image example does with `latent_dist.sample()`. One file per clip
(`<root>/<geometry>/<source>/<clip_id>.pt`, fp16), written atomically; a rebuild skips what exists,
so a cache resumes like a manifest stage. Ranks split the rows between them.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import torch

from lavie.pipelines import posterior_chunks

from .curriculum import Ticket
from .data import ClipDataset

logger = logging.getLogger(__name__)


class LatentCache:
    def __init__(self, root: str | Path, geometry_key: str):
        self.root = Path(root) / geometry_key

    def path(self, source: str, clip_id: str) -> Path:
        return self.root / source / f"{clip_id}.pt"

    def load(self, source: str, clip_id: str) -> torch.Tensor:
        """(2, C, T, h, w): posterior mean and std. A missing file is a load failure like a bad clip."""
        path = self.path(source, clip_id)
        if not path.is_file():
            raise FileNotFoundError(f"no cached latents at {path}")
        return torch.load(path, map_location="cpu", weights_only=True).float()

    def save(self, source: str, clip_id: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        path = self.path(source, clip_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        torch.save(torch.stack([mean, std]).half().contiguous(), tmp)
        os.replace(tmp, path)


class _PixelsOf(torch.utils.data.Dataset):
    """The pixels of a list of tickets, for the cache build (failures come back as None)."""

    def __init__(self, dataset: ClipDataset, tickets: list[Ticket]):
        self.dataset, self.tickets = dataset, tickets

    def __len__(self) -> int:
        return len(self.tickets)

    def __getitem__(self, i: int):
        ticket = self.tickets[i]
        try:
            return i, self.dataset.pixels(ticket, as_clip=ticket.kind == "video")
        except Exception as err:
            source = self.dataset.sources[ticket.source]
            logger.warning("latent cache: source %s row %d failed to decode, not cached: %s", source.name, ticket.row, err)
            return i, None


@torch.no_grad()
def build_latent_cache(dataset: ClipDataset, cache: LatentCache, vae, rank: int = 0, world_size: int = 1,
                       num_workers: int = 0, chunk: int = 8) -> tuple[int, int]:
    """Encode every row of every source not yet cached; returns (written, failed) on this rank."""
    tickets = []
    for index, source in enumerate(dataset.sources):
        ids = source.rows.column("clip_id").to_pylist()
        tickets += [Ticket(index, row, 0, source.kind) for row in range(len(source))
                    if not cache.path(source.name, ids[row]).is_file()]
    tickets = tickets[rank::world_size]
    if not tickets:
        return 0, 0
    loader = torch.utils.data.DataLoader(_PixelsOf(dataset, tickets), batch_size=None, num_workers=num_workers)
    written = failed = 0
    for i, pixels in loader:
        if pixels is None:
            failed += 1
            continue
        ticket = tickets[i]
        dists = posterior_chunks(vae, pixels.transpose(0, 1), chunk)  # frames (T, 3, H, W)
        mean = torch.cat([d.mean for d in dists]).transpose(0, 1).float().cpu()  # (C, T, h, w)
        std = torch.cat([d.std for d in dists]).transpose(0, 1).float().cpu()
        source = dataset.sources[ticket.source]
        cache.save(source.name, source.row(ticket.row)["clip_id"], mean, std)
        written += 1
    return written, failed
