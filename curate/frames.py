"""What every frame-reading stage shares: which rows it looks at and how their frames arrive.

Only clips that are still `ok` and kept are decoded and shown to a model (expensive models see
only survivors; LaVie §4.1 applies the cheap filters first). A clip that fails to decode becomes
an error row with its reason, and the stage's columns come back one value per input row, in
order, null where the stage did not look. Nothing here imports torch: the motion and text stages
need none.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from lavie.curate.manifest import STATUS_ERROR
from lavie.curate.stage import ColumnStage


def decode_size(width, height, short_side: int | None) -> tuple[int, int] | None:
    """(w, h) with the short side at `short_side` (never upscaled), even; None keeps the size.

    Decoding straight to about the model's input size lets swscale do the downscale, so a 1080p
    frame is never converted at full resolution only to be shrunk by PIL.
    """
    if short_side is None or width is None or height is None:
        return None
    width, height = int(width), int(height)
    if width <= 0 or height <= 0 or min(width, height) <= short_side:
        return None
    scale = short_side / min(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _column(batch: dict[str, np.ndarray], name: str, n: int) -> np.ndarray:
    values = batch.get(name)
    return np.full(n, None, dtype=object) if values is None else np.asarray(values, dtype=object)


class FrameStage(ColumnStage):
    """Decode k frames of each surviving clip and give them to `run`; failures become error rows.

    A subclass sets `output_columns` and `frames`, implements `run(frames, rows, batch)` returning
    one list per output column with one value per clip it was given, and may override `wants`
    to skip more rows (their outputs are then `passthrough` values). `status` and `error` always
    come back: the input values, except for the clips that failed here.
    """

    output_columns: tuple[str, ...] = ()
    frames: int = 3

    def frame_size(self, width, height) -> tuple[int, int] | None:
        return None

    def frame_offsets(self, num_frames: int) -> list[int]:
        """Which frames of a clip the stage reads (first, middle, last for 3)."""
        from lavie.curate.video import frame_positions

        return frame_positions(num_frames, self.frames)

    def wants(self, batch: dict[str, np.ndarray], row: int) -> bool:
        return True

    def passthrough(self, batch: dict[str, np.ndarray], column: str, row: int):
        return None

    @abstractmethod
    def run(self, frames: list[np.ndarray], rows: list[int], batch: dict[str, np.ndarray]) -> dict[str, list]:
        """The model's outputs for `frames[j]` (row `rows[j]`): {column: [value per clip]}.

        An optional "_error" list holds, per clip, None or the reason the model failed on it.
        """

    def columns(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from lavie.curate.video import read_frames  # PyAV: only where frames are read

        n = len(batch["clip_id"])
        status = _column(batch, "status", n).copy()
        error = _column(batch, "error", n).copy()
        keep = _column(batch, "keep", n)
        width, height = _column(batch, "width", n), _column(batch, "height", n)
        out = {c: [self.passthrough(batch, c, i) for i in range(n)] for c in self.output_columns}

        rows, frames = [], []
        for i in range(n):
            # Rejected and failed clips are not decoded: the cheap filters ran first so that the
            # expensive model sees only the survivors.
            if status[i] == STATUS_ERROR or keep[i] is False or keep[i] is np.False_ or not self.wants(batch, i):
                continue
            try:
                offsets = self.frame_offsets(int(batch["num_frames"][i]))
                clip_path = batch["clip_path"][i]
                path = clip_path if clip_path else batch["source_path"][i]
                first = 0 if clip_path else int(batch["start_frame"][i])
                clip = read_frames(path, [first + o for o in offsets],
                                   size=self.frame_size(width[i], height[i]))  # (k, H, W, 3)
            except Exception as exc:  # bad input is data: the row says why, the batch goes on
                status[i] = STATUS_ERROR
                error[i] = f"{self.name}: cannot decode clip: {exc}"
                continue
            rows.append(i)
            frames.append(clip)
        if rows:
            results = self.run(frames, rows, batch)
            # A clip the model itself could not handle comes back with a reason in "_error".
            failed = results.pop("_error", [None] * len(rows))
            for j, i in enumerate(rows):
                if failed[j] is not None:
                    status[i], error[i] = STATUS_ERROR, f"{self.name}: {failed[j]}"
                    continue
                for column, values in results.items():
                    out[column][i] = values[j]
        columns = {c: np.array(v, dtype=object) for c, v in out.items()}
        return {**columns, "status": status, "error": error}
