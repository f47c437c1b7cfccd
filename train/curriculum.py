"""Curriculum mixing of data sources (LaVie App. C).

LaVie starts from WebVid10M and LAION-5B and ramps its curated Vimeo25M corpus in later. Here every
source has a sampling weight that is a piecewise-linear function of the training step; each slot of
each micro-batch picks its source and its row with a random generator seeded from
(seed, step, micro-batch, rank, slot). Nothing depends on what was drawn before, so:

- the draw of any step is known without replaying the run, and a resumed run draws exactly what an
  uninterrupted one would have drawn from that step on;
- every rank draws different slots of the same step, so data parallelism needs no shard logic.

The sampler is a DataLoader `batch_sampler`: it yields lists of `Ticket`s, which the dataset
turns into decoded clips. It keeps counts of the realised mix for logging and checkpointing.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


class WeightSchedule:
    """A weight that is piecewise-linear in the step: `[[step, weight], ...]` knots, constant
    before the first and after the last; a plain number is constant."""

    def __init__(self, spec: float | list[list[float]], where: str = "weight"):
        if isinstance(spec, (int, float)):
            spec = [[0, float(spec)]]
        knots = sorted((float(s), float(w)) for s, w in (_pair(k, where) for k in spec))
        if not knots:
            raise ValueError(f"{where}: a schedule needs at least one [step, weight] knot")
        if any(w < 0 for _, w in knots):
            raise ValueError(f"{where}: weights must be >= 0, got {knots}")
        self.steps = [s for s, _ in knots]
        self.weights = [w for _, w in knots]

    def __call__(self, step: int) -> float:
        if step <= self.steps[0]:
            return self.weights[0]
        if step >= self.steps[-1]:
            return self.weights[-1]
        i = bisect.bisect_right(self.steps, step)
        s0, s1, w0, w1 = self.steps[i - 1], self.steps[i], self.weights[i - 1], self.weights[i]
        return w0 + (w1 - w0) * (step - s0) / (s1 - s0)


def _pair(knot, where: str) -> tuple[float, float]:
    if not isinstance(knot, (list, tuple)) or len(knot) != 2:
        raise ValueError(f"{where}: each knot must be [step, weight], got {knot!r}")
    return knot[0], knot[1]


@dataclass(frozen=True)
class SourceSpec:
    """What the sampler knows of a source: its dataset index, name, weight schedule, row count, kind."""

    index: int
    name: str
    schedule: WeightSchedule
    rows: int
    kind: str


@dataclass(frozen=True)
class Ticket:
    """One thing to load: a row of a source, and the seed of its crops and replacements."""

    source: int  # index into the dataset's sources
    row: int
    seed: int
    kind: str  # "video" | "image"


def mix_probabilities(schedules: list[WeightSchedule], step: int) -> np.ndarray:
    weights = np.array([s(step) for s in schedules], dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        raise ValueError(f"all source weights are zero at step {step}")
    return weights / total


class CurriculumSampler:
    """Yields, for every (step, micro-batch), the tickets of this rank's batch.

    Args:
        video_sources: sources of the clips (for vsr, image sources too: they become clips).
        image_sources: sources of the images appended to every clip in joint training.
        batch_size: videos per micro-batch on this rank.
        n_images: images per video drawn from the image sources (joint training), 0 for none.
        accumulation: micro-batches per optimizer step.
        seed, rank: the draw of a slot depends on (seed, step, micro-batch, rank, slot) only.
        start_step, end_step: the optimizer steps to cover.
    """

    def __init__(self, video_sources: list[SourceSpec], image_sources: list[SourceSpec], batch_size: int, n_images: int = 0,
                 accumulation: int = 1, seed: int = 0, rank: int = 0, start_step: int = 0, end_step: int | None = None):
        if not video_sources:
            raise ValueError("the sampler needs at least one video (or, for vsr, clip-making) source")
        for source in [*video_sources, *image_sources]:
            if source.rows < 1:
                raise ValueError(f"source {source.name!r} has no usable rows (keep=true, status ok, with a caption)")
        if n_images and not image_sources:
            raise ValueError(f"n_images={n_images} needs an image source")
        self.video_sources = video_sources
        self.image_sources = image_sources
        self.batch_size = batch_size
        self.n_images = n_images
        self.accumulation = accumulation
        self.seed = seed
        self.rank = rank
        self.start_step = start_step
        self.end_step = end_step
        self.counts = {s.name: 0 for s in [*video_sources, *image_sources]}

    # --- one step's draw ----------------------------------------------------------------------

    def _rng(self, step: int, micro: int, slot: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, micro, self.rank, slot])

    def _pick(self, rng: np.random.Generator, sources: list[SourceSpec], step: int) -> Ticket:
        probs = mix_probabilities([s.schedule for s in sources], step)
        source = sources[int(rng.choice(len(sources), p=probs))]
        return Ticket(source=source.index, row=int(rng.integers(source.rows)), seed=int(rng.integers(2**62)), kind=source.kind)

    def draw(self, step: int, micro: int = 0) -> list[tuple[Ticket, list[Ticket]]]:
        """The batch of (step, micro): per video slot, its ticket and its `n_images` image tickets."""
        batch = []
        for slot in range(self.batch_size):
            rng = self._rng(step, micro, slot)
            video = self._pick(rng, self.video_sources, step)
            images = [self._pick(rng, self.image_sources, step) for _ in range(self.n_images)]
            batch.append((video, images))
        return batch

    # --- DataLoader batch_sampler ---------------------------------------------------------------

    def __iter__(self):
        step = self.start_step
        while self.end_step is None or step < self.end_step:
            for micro in range(self.accumulation):
                yield self.draw(step, micro)
            step += 1

    def __len__(self) -> int:
        if self.end_step is None:
            raise TypeError("an open-ended sampler has no length")
        return (self.end_step - self.start_step) * self.accumulation

    # --- realised mix ---------------------------------------------------------------------------

    def record(self, source_names: list[str]) -> None:
        """Count the sources a consumed batch came from (the realised mix, after replacements)."""
        for name in source_names:
            self.counts[name] += 1

    def state_dict(self) -> dict:
        return {"seed": self.seed, "start_step": self.start_step, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"checkpoint sampler seed {state['seed']} differs from the config's seed {self.seed}")
        self.start_step = int(state["start_step"])
        self.counts.update(state["counts"])
