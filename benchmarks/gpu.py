"""`make gpu-check`: qualify the toolkit on one CUDA machine in one run (under 8 minutes on an H200).

Every network is built from the SD 1.4 and SD x4 upscaler layouts in `benchmarks/gpu_check.yaml`
with random weights (no download). Sections, each with a time budget, each written to the JSON
as it finishes:

  header        device, driver, torch, CUDA, cuDNN, CPU count
  base_train    base model (LaVie §3.1) 16x320x512 + 4 joint images, bf16 autocast, AdamW, EMA,
                with and without gradient checkpointing at the largest batch that fits (searched):
                s/step, samples/s, peak memory, FLOPs (torch.utils.flop_counter), MFU
  interp_train  interpolation model (§3.2), 61 frames at 256x256: the same figures
  vsr_train     super-resolution model (§3.3), 8 frames of 320x320 patches: the same figures
  variants      SDPA backends (flash / memory-efficient / cuDNN / math) and channels-last
  distributed   DDP and FSDP through accelerate (torchrun, one process per GPU), losses against a
                single-process run on the same data
  sampling      cascade base 16x320x512 -> 61 frames -> 1280x2048 in 8-frame windows: seconds and
                peak memory per stage, plain and with CPU offload + VAE slicing
  data_feeding  ClipDataset through a DataLoader with N workers against the base step's demand
  decoder       ClipDataset against torchcodec's VideoDecoder on the same clips (benchmarks/dataloader.py)
  curation      clip (aesthetic) and caption stages as Ray actors with num_gpus=1 (tiny models): placement, clips/s
  nvdec         GPU decoding (torchcodec NVDEC, PyAV *_cuvid) against CPU decoding
  hygiene       an impossible batch is a clear out-of-memory message and memory comes back;
                a non-finite loss under bf16 skips the step and leaves the weights as they were
  compile       torch.compile on vs off (its own process, ended at its budget)

    python benchmarks/gpu.py --out gpu-check-out            # CUDA machine, full sizes
    python benchmarks/gpu.py --tiny --out /tmp/gpu-tiny     # CPU, tiny sizes (the test suite runs this)

`--tiny` runs every section at tiny sizes on the CPU; parts that need CUDA say "no CUDA".
`--sections a,b` runs a subset; `--budget-scale 2` doubles every budget (a slower GPU). Output:
`OUT/gpu-check.json` (rewritten after every section, so a run cut short keeps what finished) and
the same table printed at the end (`OUT/gpu-check.txt`). Exit status 0; 2 for a usage error (one
line, before any work); 3 when the run hit its total time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # fewer fragmentation OOMs in the batch search
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars (pipelines, model loading) would bury the table
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "gpu_check.yaml"
EXIT_OK, EXIT_USAGE, EXIT_CUT = 0, 2, 3
NO_CUDA = "no CUDA"
SECTIONS = ["header", "base_train", "interp_train", "vsr_train", "variants", "distributed", "sampling", "data_feeding",
            "decoder", "curation", "nvdec", "hygiene", "compile"]

# Peak dense (no sparsity) bf16 tensor-core throughput in TFLOP/s, matched in order against
# torch.cuda.get_device_name(). NVIDIA datasheets quote sparse figures; dense is half of them.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"H200 NVL", 835.0),  # H200 NVL datasheet: BF16 1,671 TFLOPS with sparsity
    (r"H200|GH200", 989.4),  # H200 SXM / GH200 datasheets: BF16 1,979 TFLOPS with sparsity
    (r"H100 NVL", 835.0),  # H100 NVL datasheet: 1,671 TFLOPS with sparsity
    (r"H100 PCIe", 756.0),  # H100 PCIe datasheet: 1,513 TFLOPS with sparsity
    (r"H100|H800", 989.4),  # H100 SXM5 datasheet: 1,979 TFLOPS with sparsity (H800: same core)
    (r"B200", 2250.0),  # HGX B200 datasheet: BF16 4.5 PFLOPS with sparsity per GPU
    (r"A100|A800", 312.0),  # A100 datasheet: BF16 312 TFLOPS dense (624 with sparsity)
    (r"L40S", 362.05),  # L40S datasheet: BF16 733 TFLOPS with sparsity
    (r"L40\b", 181.05),  # L40 datasheet: BF16 362.1 TFLOPS with sparsity
    (r"\bL4\b", 121.0),  # L4 datasheet: BF16 242 TFLOPS with sparsity
    (r"\bA10\b", 125.0),  # A10 datasheet: BF16 250 TFLOPS with sparsity
    (r"RTX 4090", 165.2),  # Ada Lovelace whitepaper, App. A: BF16 with FP32 accumulate 165.2 TFLOPS dense
    (r"RTX 6000 Ada", 364.2),  # Ada Lovelace whitepaper: RTX 6000 Ada BF16 FP32-accumulate 364.2 dense
]


def peak_bf16_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a device from the table above, or None when it is not listed."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


# --- time budgets and the report --------------------------------------------------------------


class Budget:
    """A section's time allowance; loops ask `left()` before each unit of work."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.used()

    def expired(self) -> bool:
        return self.left() <= 0


class SectionSkipped(Exception):
    """A section (or part) that cannot run here; the message says why (e.g. "no CUDA")."""


@dataclass
class Report:
    """The JSON report, rewritten atomically whenever a section starts or finishes."""

    path: Path
    header: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)
    finished: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)  # the watchdog thread writes too

    def as_dict(self) -> dict:
        return {"header": self.header, "sections": self.sections, "finished": self.finished}

    def write(self) -> None:
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.as_dict(), indent=2, default=_jsonable) + "\n")
            os.replace(tmp, self.path)

    def set(self, name: str, entry: dict) -> None:
        with self.lock:
            self.sections[name] = entry
            self.write()


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_sections(report: Report, sections: list[tuple[str, Callable[[Budget], dict]]], budgets: dict[str, float],
                 total_s: float, on_cut: Callable[[str], None] | None = None, log=print,
                 clock: Callable[[], float] = time.perf_counter) -> bool:
    """Run `sections` in order, each within min(its budget, the time left of `total_s`).

    A section returns {"rows": [...], "notes": [...], "status": ...}; its entry in the report is
    written before it starts ("running") and when it ends (ok / no CUDA / skipped / error). When
    the total time runs out mid-section, a watchdog marks it "cut" and calls `on_cut` (the CLI
    exits there). Returns True when every section got to run.
    """
    start = clock()
    current = {"name": None, "t0": start}

    def cut() -> None:
        name = current["name"]
        with report.lock:
            if name is not None:
                entry = dict(report.sections[name])
                entry.update(status="cut", seconds=round(clock() - current["t0"], 2),
                             notes=entry.get("notes", []) + [f"cut: the whole run reached its {total_s:.0f} s limit"])
                report.sections[name] = entry
            report.write()
        if on_cut is not None:
            on_cut(name)

    watchdog = threading.Timer(total_s, cut)
    watchdog.daemon = True
    watchdog.start()
    complete = True
    try:
        for name, fn in sections:
            left = total_s - (clock() - start)
            budget_s = min(float(budgets.get(name, 30)), left)
            if budget_s < min(5.0, 0.25 * float(budgets.get(name, 30))):
                report.set(name, {"status": "skipped", "budget_s": round(budget_s, 1), "rows": [],
                                  "notes": [f"skipped: out of time ({left:.0f} s of the run left)"]})
                log(f"[{name}] skipped: out of time")
                complete = False
                continue
            t0 = clock()
            with report.lock:
                report.set(name, {"status": "running", "budget_s": round(budget_s, 1), "rows": []})
                current.update(name=name, t0=t0)
            log(f"[{name}] running (budget {budget_s:.0f} s)")
            try:
                result = fn(Budget(budget_s)) or {}
                status = result.get("status", "ok")
            except SectionSkipped as why:
                result, status = {"notes": [str(why)]}, str(why) if str(why) == NO_CUDA else "skipped"
                if status == "skipped":
                    result["notes"] = [f"skipped: {why}"]
            except Exception as err:  # one failing section must not lose the others' figures
                result, status = {"notes": [f"error: {type(err).__name__}: {err}"],
                                  "traceback": traceback.format_exc(limit=8)}, "error"
            finally:
                _free_memory()
            current["name"] = None
            seconds = clock() - t0
            entry = {"status": status, "budget_s": round(budget_s, 1), "seconds": round(seconds, 2),
                     "rows": result.get("rows", []), "notes": result.get("notes", [])}
            if "traceback" in result:
                entry["traceback"] = result["traceback"]
            if seconds > budget_s * 1.1 + 2:
                entry["notes"].append(f"over budget: {seconds:.0f} s of {budget_s:.0f} s")
            report.set(name, entry)
            log(f"[{name}] {status} in {seconds:.1f} s")
    finally:
        watchdog.cancel()
    return complete


def format_table(report: dict) -> str:
    """The report as text: the header, then one small table per section."""
    lines = ["LaVie gpu-check"]
    for key, value in report["header"].items():
        lines.append(f"  {key:<18} {value}")
    for name, entry in report["sections"].items():
        lines.append("")
        lines.append(f"== {name}: {entry['status']}" + (f" ({entry['seconds']:.1f} s of {entry['budget_s']:.0f} s)" if "seconds" in entry else ""))
        rows = entry.get("rows", [])
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            cells = [[_cell(row.get(c)) for c in columns] for row in rows]
            widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)))
            for r in cells:
                lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)))
        for note in entry.get("notes", []):
            lines.append(f"  - {note}")
    by_status: dict[str, list[str]] = {}
    for name, entry in report["sections"].items():
        by_status.setdefault(entry["status"], []).append(name)
    lines.append("")
    lines.append("sections: " + "; ".join(f"{status}: {', '.join(names)}" for status, names in by_status.items()))
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e5:
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
        return f"{value:.3e}"
    return str(value)


# --- environment ---------------------------------------------------------------------------------


def _free_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # the CPU frees tensors by reference counting
        gc.collect()
        torch.cuda.empty_cache()


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown (nvidia-smi failed)"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown (no nvidia-smi)"


def header(device: torch.device) -> dict:
    info = {"device": "cpu", "device_name": platform.processor() or platform.machine(),
            "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "driver": NO_CUDA, "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device=str(device), device_name=props.name, driver=driver_version(),
                    memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}")
        peak = peak_bf16_tflops(props.name)
        info["peak_bf16_tflops"] = peak if peak is not None else "not in the table (pass --peak-tflops)"
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


# --- networks -------------------------------------------------------------------------------------


def build_unet(stage: str, shapes: dict, device: torch.device):
    """The video UNet a stage trains, random weights, built from the layouts in gpu_check.yaml.

    base: SD 1.4's UNet in the released base layout (LaVie §3.1); interp: the released
    interpolation layout (§3.2); vsr: the x4 upscaler's UNet in the released VSR layout (§3.3).
    The one place where the benchmark meets `lavie.model`'s constructors.
    """
    from diffusers import UNet2DConditionModel

    from lavie.model import VideoSRUNet, VideoUNet

    if stage not in ("base", "interp", "vsr"):
        raise ValueError(f"stage={stage!r}: choose base, interp or vsr")
    with torch.device(device):  # random init straight on the device: seconds instead of a minute for SD size
        if stage == "vsr":  # the released VSR layout is VideoSRUNet's default
            return VideoSRUNet.from_unet2d(UNet2DConditionModel(**shapes["x4_unet"]))
        return VideoUNet.from_unet2d(UNet2DConditionModel(**shapes["sd14_unet"]), layout=stage)  # the released layout


def unet_forward(unet, stage: str, batch: dict) -> torch.Tensor:
    """One forward pass of a stage's UNet on a batch from `make_batch`."""
    if stage == "vsr":
        if "low_res" in inspect.signature(type(unet).forward).parameters:
            return unet(batch["noisy"], batch["t"], batch["context"], low_res=batch["low_res"], noise_level=batch["noise_level"]).sample
        # the upscaler's own convention: low-resolution frames concatenated to the latents, noise level as class label
        sample = torch.cat([batch["noisy"], batch["low_res"].to(batch["noisy"].dtype)], dim=1)  # (B, 4 + 3, T, h, w)
        return unet(sample, batch["t"], batch["context"], class_labels=batch["noise_level"]).sample
    if stage == "interp":
        return unet(batch["noisy"], batch["t"], batch["context"], cond=batch["cond"]).sample
    return unet(batch["noisy"], batch["t"], batch["context"], n_images=batch["n_images"]).sample


@dataclass
class TrainShape:
    stage: str
    frames: int
    n_images: int
    height: int  # pixels
    width: int
    latent_factor: int
    text_tokens: int
    text_dim: int

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // self.latent_factor, self.width // self.latent_factor

    def describe(self) -> str:
        images = f"+{self.n_images}" if self.n_images else ""
        return f"{self.frames}{images}x{self.height}x{self.width}"


def train_shape(stage: str, spec: dict, shapes: dict, text_tokens: int) -> TrainShape:
    vae = shapes["x4_vae" if stage == "vsr" else "sd14_vae"]
    unet = shapes["x4_unet" if stage == "vsr" else "sd14_unet"]
    return TrainShape(stage, spec["frames"], spec.get("n_images", 0), spec["height"], spec["width"],
                      2 ** (len(vae["block_out_channels"]) - 1), text_tokens, unet["cross_attention_dim"])


def make_batch(shape: TrainShape, batch: int, device: torch.device, seed: int = 0) -> dict:
    """Random latents (as the latent cache stores them), noise, timesteps and text embeddings,
    noised with the SD schedule; the conditioning each stage reads."""
    from diffusers import DDPMScheduler

    from lavie.model import interpolation_conditioning

    g = torch.Generator(device).manual_seed(seed)
    h, w = shape.latent_size
    frames = shape.frames + shape.n_images
    x0 = torch.randn(batch, 4, frames, h, w, generator=g, device=device)  # (B, C, T + M, h, w)
    noise = torch.randn(x0.shape, generator=g, device=device)
    t = torch.randint(0, 1000, (batch,), generator=g, device=device)  # (B,)
    schedule = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    out = {"noisy": schedule.add_noise(x0, noise, t), "t": t, "target": noise, "n_images": shape.n_images}
    if shape.n_images:  # joint training: one prompt per frame, the images with their own (LaVie Eq. 3)
        out["context"] = torch.randn(batch, frames, shape.text_tokens, shape.text_dim, generator=g, device=device)
    else:
        out["context"] = torch.randn(batch, shape.text_tokens, shape.text_dim, generator=g, device=device)
    if shape.stage == "interp":
        out["cond"] = interpolation_conditioning(x0[:, :, ::4], 4)  # (B, C', T, h, w): the frame-repeated key frames
    if shape.stage == "vsr":
        out["low_res"] = torch.rand(batch, 3, frames, h, w, generator=g, device=device) * 2 - 1  # (B, 3, T, h, w)
        out["noise_level"] = torch.randint(0, 351, (batch,), generator=g, device=device)
    return out


class Trainer:
    """The training step of lavie-train reduced to the network: bf16 autocast forward, fp32 MSE,
    backward, AdamW, EMA of the trainable weights, a non-finite loss skipping the step."""

    def __init__(self, unet, shape: TrainShape, device: torch.device, amp: torch.dtype | None = torch.bfloat16,
                 ema: bool = True, lr: float = 1e-5):
        from diffusers.training_utils import EMAModel

        self.unet, self.shape, self.device, self.amp = unet.train(), shape, device, amp
        self.params = [p for p in unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.01, foreach=True)
        self.ema = EMAModel(self.params, decay=0.9999, foreach=True) if ema else None
        self.skipped = 0

    def loss(self, batch: dict) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            pred = unet_forward(self.unet, self.shape.stage, batch)
        return torch.nn.functional.mse_loss(pred.float(), batch["target"].float())

    def step(self, batch: dict) -> float:
        loss = self.loss(batch)
        if not torch.isfinite(loss.detach()):  # the loop's rule: skip the step, count it, keep the weights
            self.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
            return float("nan")
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.params)
        return loss.item()


def timed_steps(trainer: Trainer, batch: dict, steps: int, budget: Budget | None = None) -> list[float]:
    """Seconds of each of `steps` steps after one warm-up step (fewer when the budget runs out)."""
    trainer.step(batch)
    synchronize(trainer.device)
    times = []
    for _ in range(steps):
        if times and budget is not None and budget.left() < 1.5 * max(times):
            break
        t0 = time.perf_counter()
        trainer.step(batch)
        synchronize(trainer.device)
        times.append(time.perf_counter() - t0)
    return times


def count_step_flops(trainer: Trainer, batch: dict) -> int:
    """FLOPs of one forward + backward (model FLOPs: counted without activation recomputation)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.loss(batch).backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def largest_batch(fits: Callable[[int], bool], cap: int, budget: Budget, max_trials: int = 9) -> tuple[int, list[dict]]:
    """The largest batch in [1, cap] for which `fits(batch)` holds: doubling, then bisection.

    `fits` returns False on out-of-memory. Stops early when the budget or `max_trials` runs out;
    the trials say what was tried."""
    ok, bad, trials = 0, None, []
    batch = 1
    while batch <= cap and len(trials) < max_trials and not budget.expired():
        t0 = time.perf_counter()
        result = fits(batch)
        trials.append({"batch": batch, "fits": result, "seconds": round(time.perf_counter() - t0, 2)})
        if not result:
            bad = batch
            break
        ok = batch
        if batch == cap:
            break
        batch = min(batch * 2, cap)
    while bad is not None and bad - ok > 1 and len(trials) < max_trials and not budget.expired():
        mid = (ok + bad) // 2
        t0 = time.perf_counter()
        result = fits(mid)
        trials.append({"batch": mid, "fits": result, "seconds": round(time.perf_counter() - t0, 2)})
        ok, bad = (mid, bad) if result else (ok, mid)
    return ok, trials


def try_step(trainer: Trainer, shape: TrainShape, batch_size: int) -> tuple[bool, str | None]:
    """One training step at `batch_size`; (False, message) on out-of-memory, with memory given back."""
    message = None
    try:
        trainer.step(make_batch(shape, batch_size, trainer.device))
        synchronize(trainer.device)
        return True, None
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not is_oom(err):
            raise
        message = str(err).splitlines()[0][:300]
    # outside the except block: the traceback (and the activations it holds) is gone
    trainer.optimizer.zero_grad(set_to_none=True)
    _free_memory()
    return False, message


# --- the benchmark run -------------------------------------------------------------------------------


class GpuCheck:
    def __init__(self, args: argparse.Namespace, config: dict):
        self.args = args
        self.tiny = args.tiny
        self.profile = config["profiles"]["tiny" if args.tiny else "full"]
        self.shapes = config["shapes"]["tiny" if args.tiny else "full"]
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
        self.cuda = self.device.type == "cuda"
        self.scratch = Path(tempfile.mkdtemp(prefix="lavie-gpu-check-"))
        self.results: dict = {}  # figures later sections read (the base step's demand, ...)
        name = torch.cuda.get_device_name(self.device) if self.cuda else ""
        self.peak_tflops = args.peak_tflops or (peak_bf16_tflops(name) if self.cuda else None)

    def sections(self) -> list[tuple[str, Callable[[Budget], dict]]]:
        return [
            ("header", self.section_header),
            ("base_train", lambda b: self.section_train("base", b)),
            ("interp_train", lambda b: self.section_train("interp", b)),
            ("vsr_train", lambda b: self.section_train("vsr", b)),
            ("variants", self.section_variants),
            ("distributed", self.section_distributed),
            ("sampling", self.section_sampling),
            ("data_feeding", self.section_data_feeding),
            ("decoder", self.section_decoder),
            ("curation", self.section_curation),
            ("nvdec", self.section_nvdec),
            ("hygiene", self.section_hygiene),
            ("compile", self.section_compile),
        ]

    def shape(self, stage: str) -> TrainShape:
        return train_shape(stage, self.profile["train"][stage], self.shapes, self.profile["text_tokens"])

    def mfu(self, flops_per_sample: float, samples_per_s: float) -> float | None:
        if not self.peak_tflops:
            return None
        return round(flops_per_sample * samples_per_s / (self.peak_tflops * 1e12), 4)

    # -- header --

    def section_header(self, budget: Budget) -> dict:
        info = header(self.device)
        info["profile"] = "tiny" if self.tiny else "full"
        if self.cuda and self.args.peak_tflops:
            info["peak_bf16_tflops"] = f"{self.args.peak_tflops} (--peak-tflops)"
        self.report.header.update(info)
        rows = [{"device": info["device_name"], "driver": info["driver"], "torch": info["torch"], "cuda": info["cuda"],
                 "peak_bf16_tflops": self.peak_tflops}]
        notes = [] if self.cuda else [f"{NO_CUDA}: tiny sizes on the CPU; MFU needs a CUDA device's peak"]
        return {"rows": rows, "notes": notes}

    # -- training steps --

    def section_train(self, stage: str, budget: Budget) -> dict:
        spec, shape = self.profile["train"][stage], self.shape(stage)
        unet = build_unet(stage, self.shapes, self.device)
        params = sum(p.numel() for p in unet.parameters())
        trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
        trainer = Trainer(unet, shape, self.device)
        flops = count_step_flops(trainer, make_batch(shape, 1, self.device))
        rows, notes = [], [f"{stage} UNet {params / 1e6:.1f}M parameters, {trainable / 1e6:.1f}M trained; "
                           f"{shape.describe()} px, latents {shape.latent_size}; FLOPs per sample {flops:.3e} "
                           f"(torch.utils.flop_counter, forward + backward, no recomputation)"]
        for checkpointing in (False, True):
            if budget.left() < 0.15 * budget.seconds:
                notes.append(f"checkpointing={checkpointing}: skipped, out of time")
                continue
            if checkpointing:
                unet.enable_gradient_checkpointing()
            else:
                unet.disable_gradient_checkpointing()
            _free_memory()
            share = Budget(budget.left() / (2 if not checkpointing else 1))
            search = Budget(share.seconds * 0.6)
            best, trials = largest_batch(lambda b: try_step(trainer, shape, b)[0], spec["max_batch"], search)
            if best == 0:
                rows.append({"checkpointing": checkpointing, "batch": 0, "note": "batch 1 does not fit"})
                continue
            batch = make_batch(shape, best, self.device)
            reset_peak(self.device)
            times = timed_steps(trainer, batch, spec["steps"], share)
            step_s = statistics.median(times)
            row = {"checkpointing": checkpointing, "batch": best,
                   "searched": ",".join(f"{t['batch']}{'' if t['fits'] else '(oom)'}" for t in trials),
                   "s/step": round(step_s, 4), "samples/s": round(best / step_s, 3), "peak_gib": peak_gib(self.device),
                   "tflop/step": float(f"{flops * best / 1e12:.4g}"), "mfu": self.mfu(flops, best / step_s)}
            if best == spec["max_batch"]:
                row["note"] = f"search capped at {best}"
            rows.append(row)
            self.results[f"{stage}_train"] = {"samples_per_s": best / step_s, "batch": best, "checkpointing": checkpointing}
        if not self.peak_tflops:
            notes.append("MFU: n/a (" + (NO_CUDA if not self.cuda else "device not in the peak table; pass --peak-tflops") + ")")
        return {"rows": rows, "notes": notes}

    # -- SDPA backends and channels-last --

    def section_variants(self, budget: Budget) -> dict:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        spec, shape = self.profile["variants"], self.shape("base")
        unet = build_unet("base", self.shapes, self.device)
        trainer = Trainer(unet, shape, self.device)
        batch = make_batch(shape, spec["batch"], self.device)
        rows, notes = [], []
        backends = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                    "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
        for name, backend in backends.items():
            if budget.left() < 0.2 * budget.seconds:
                rows.append({"variant": f"sdpa={name}", "s/step": None, "note": "out of time"})
                continue
            if not self.cuda and name in ("efficient", "cudnn"):
                rows.append({"variant": f"sdpa={name}", "s/step": None, "note": NO_CUDA})
                continue
            context = sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()
            try:
                with context:
                    reset_peak(self.device)
                    times = timed_steps(trainer, batch, spec["steps"], budget)
                rows.append({"variant": f"sdpa={name}", "s/step": round(statistics.median(times), 4), "peak_gib": peak_gib(self.device)})
            except RuntimeError as err:  # a backend that cannot run these shapes (e.g. flash with an attention bias)
                trainer.optimizer.zero_grad(set_to_none=True)
                rows.append({"variant": f"sdpa={name}", "s/step": None, "note": str(err).splitlines()[0][:120]})
                _free_memory()
        timed = [r for r in rows if r.get("s/step")]
        if timed:
            best = min(timed, key=lambda r: r["s/step"])
            notes.append(f"fastest attention: {best['variant']}")
        if budget.left() > 0.1 * budget.seconds:
            unet.to(memory_format=torch.channels_last)
            times = timed_steps(trainer, batch, spec["steps"], budget)
            rows.append({"variant": "channels_last", "s/step": round(statistics.median(times), 4), "peak_gib": peak_gib(self.device)})
            default = next((r["s/step"] for r in rows if r["variant"] == "sdpa=default" and r.get("s/step")), None)
            if default:
                ratio = default / rows[-1]["s/step"]
                notes.append(f"channels-last: {ratio:.2f}x the default layout's speed ({'helps' if ratio > 1.02 else 'does not help'})")
        return {"rows": rows, "notes": notes}

    # -- torch.compile, in its own process so its budget is a hard limit --

    def section_compile(self, budget: Budget) -> dict:
        if not self.cuda:
            raise SectionSkipped(NO_CUDA)
        result = self.worker("compile", {}, budget, nproc=None)
        rows = [{"mode": "eager", "s/step": result["eager_s"]},
                {"mode": "compiled", "s/step": result["compiled_s"], "compile_s": result["compile_s"]}]
        return {"rows": rows, "notes": [f"torch.compile: {result['eager_s'] / result['compiled_s']:.2f}x eager (steady state)"]}

    def worker(self, kind: str, options: dict, budget: Budget, nproc: int | None) -> dict:
        """Run `benchmarks/gpu.py --worker KIND` (under torchrun when `nproc` is given) and read its JSON."""
        out = self.scratch / f"worker-{kind}-{options.get('mode', '')}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable]
        if nproc is not None:
            cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        cmd += [str(Path(__file__).resolve()), "--worker", kind, "--worker-options", json.dumps(options),
                "--worker-out", str(out)] + (["--tiny"] if self.tiny else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1" if not self.cuda else os.environ.get("OMP_NUM_THREADS", "4")}
        # its own process group; at the budget (or a cut run) it ends with every rank it started
        self._worker = proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                               start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=max(5.0, budget.left()))
        except subprocess.TimeoutExpired:
            self.kill_worker()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=30)
            raise SectionSkipped(f"{kind} worker did not finish within its budget ({budget.seconds:.0f} s)")
        finally:
            self._worker = None
        if proc.returncode != 0 or not out.is_file():
            tail = (stdout[-1500:] + stderr[-2500:]).strip()
            raise RuntimeError(f"{kind} worker exited with status {proc.returncode}: {tail}")
        return json.loads(out.read_text())

    def kill_worker(self) -> None:
        """End a running worker and every process under it. torchrun starts each rank in a session
        of its own, so the ranks are found as descendants before anything is killed."""
        import psutil

        proc = getattr(self, "_worker", None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = psutil.Process(proc.pid).children(recursive=True)
            for child in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    # -- DDP / FSDP through accelerate --

    def section_distributed(self, budget: Budget) -> dict:
        spec = self.profile["distributed"]
        nproc = torch.cuda.device_count() if self.cuda else 2
        reference = distributed_losses(self.tiny, spec, rank=0, world=nproc, accelerator=None, device=self.device)
        rows = [{"mode": "single process", "processes": 1, "losses": _fmt_losses(reference["losses"]),
                 "s/step": reference["s_per_step"], "max_rel_diff": None}]
        tolerance = 2e-2 if self.cuda else 1e-4  # bf16 on GPUs, fp32 on the CPU
        notes = [f"the same global batch ({spec['batch_per_process'] * nproc} clips of {spec['frames']}x{spec['height']}x"
                 f"{spec['width']}) and initial weights in every run; agreement tolerance {tolerance:g} (relative)"]
        _free_memory()
        for mode in ("ddp", "fsdp"):
            if mode == "fsdp" and not self.cuda:
                rows.append({"mode": "fsdp", "processes": nproc, "note": f"{NO_CUDA} (accelerate shards with FSDP on GPUs)"})
                continue
            if budget.left() < 15:
                rows.append({"mode": mode, "processes": nproc, "note": "out of time"})
                continue
            try:
                result = self.worker("distributed", {"mode": mode}, budget, nproc=nproc)
            except (SectionSkipped, RuntimeError) as err:  # one mode failing keeps the other's figures
                rows.append({"mode": mode, "processes": nproc, "note": str(err)[:300]})
                continue
            diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(result["losses"], reference["losses"]))
            rows.append({"mode": mode, "processes": result["num_processes"], "distributed_type": result["distributed_type"],
                         "losses": _fmt_losses(result["losses"]), "s/step": result["s_per_step"],
                         "peak_gib": result.get("peak_gib"), "max_rel_diff": float(f"{diff:.3g}"),
                         "agrees": diff <= tolerance})
        return {"rows": rows, "notes": notes}

    # -- the sampling cascade --

    def section_sampling(self, budget: Budget) -> dict:
        spec = self.profile["sampling"]
        dtype = torch.bfloat16 if self.cuda else torch.float32
        pipes = build_cascade(self.shapes, self.profile["text_tokens"], self.device, dtype)
        configs = [("plain", False, False), ("offload+vae_slicing", True, True)] if self.cuda else \
                  [("plain", False, False), ("vae_slicing", False, True)]
        rows, notes = [], []
        for name, offload, slicing in configs:
            if offload:
                for pipe in pipes.values():
                    pipe.enable_model_cpu_offload(device=self.device)
            if slicing:
                for pipe in pipes.values():
                    pipe.vae.enable_slicing()
            video = None
            for stage in ("base", "interp", "vsr"):
                steps = spec[f"{stage}_steps"]
                if budget.left() < 0.05 * budget.seconds:
                    rows.append({"config": name, "stage": stage, "note": "out of time"})
                    video = None
                    continue
                if stage != "base" and video is None:
                    rows.append({"config": name, "stage": stage, "note": "no input (previous stage did not run)"})
                    continue
                _free_memory()
                reset_peak(self.device)
                synchronize(self.device)
                t0 = time.perf_counter()
                video = sample_stage(pipes[stage], stage, video, steps, spec)
                synchronize(self.device)
                seconds = time.perf_counter() - t0
                rows.append({"config": name, "stage": stage, "steps": steps, "frames_out": "x".join(map(str, video.shape[2:])),
                             "seconds": round(seconds, 2), "s/step": round(seconds / steps, 3),
                             "projected_50_steps_s": round(seconds / steps * 50, 1) if steps < 50 else None,
                             "peak_gib": peak_gib(self.device)})
        notes.append("s/step includes the stage's text encoding and VAE decoding; the 50-step projection scales the whole stage")
        del pipes
        return {"rows": rows, "notes": notes}

    # -- data feeding --

    def start_sources(self) -> None:
        """Start making the source videos of the data sections while the GPU trains: the sample
        set (1080p, 720p, 360p, portrait) in a separate process at full size (no GIL shared with
        the timed steps), two small clips in a thread with --tiny."""
        raw = self.scratch / "raw"
        self._sources_error, self._sources_proc, self._sources_thread = None, None, None
        if not self.tiny:
            code = "import sys; from lavie.curate.samples import make_samples; make_samples(sys.argv[1])"
            with open(self.scratch / "sources.log", "w") as log:
                self._sources_proc = subprocess.Popen([sys.executable, "-c", code, str(raw)], stdout=log, stderr=subprocess.STDOUT)
            return

        def make() -> None:
            try:
                raw.mkdir(parents=True)
                for i in range(2):
                    write_test_clip(raw / f"clip{i}.mp4", seed=i, frames=24, size=(96, 64))
            except Exception as err:  # reported by the sections that need the videos
                self._sources_error = err

        self._sources_thread = threading.Thread(target=make, name="sources", daemon=True)
        self._sources_thread.start()

    def close(self) -> None:
        self.kill_worker()
        if getattr(self, "_sources_proc", None) is not None and self._sources_proc.poll() is None:
            self._sources_proc.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def sources(self) -> Path:
        if self._sources_thread is not None:
            self._sources_thread.join()
        if self._sources_proc is not None and self._sources_proc.poll() is None:
            self._sources_proc.wait()
        if self._sources_proc is not None and self._sources_proc.returncode != 0:
            self._sources_error = (self.scratch / "sources.log").read_text()[-500:]
        if self._sources_error:
            raise RuntimeError(f"making the source videos failed: {self._sources_error}")
        return self.scratch / "raw"

    def section_data_feeding(self, budget: Budget) -> dict:
        import dataloader as loader_bench
        from lavie.train.data import ClipDataset, ClipGeometry, collate, load_source

        spec = self.profile["data"]
        shape = self.profile["train"]["base"]
        geometry = ClipGeometry(num_frames=shape["frames"], target_fps=8.0, height=shape["height"], width=shape["width"], crop="random")
        rows_in = loader_bench.virtual_clips(self.sources(), spec["clips"], length=max(24, shape["frames"] * 3))
        source = load_source("clips", loader_bench.write_clip_manifest(rows_in, self.scratch / "data"), "video")
        dataset = ClipDataset([source], geometry)
        slots = [(t, []) for t in loader_bench.tickets(source)]
        loader = torch.utils.data.DataLoader(slots, batch_size=spec["batch"], num_workers=spec["workers"],
                                             collate_fn=lambda items: collate([dataset[s] for s in items]),
                                             pin_memory=self.cuda, prefetch_factor=2 if spec["workers"] else None,
                                             persistent_workers=False)
        t0 = time.perf_counter()
        clips = 0
        for batch in loader:
            clips += batch["video"].shape[0]
            if budget.expired():
                break
        seconds = time.perf_counter() - t0
        rate = clips / seconds
        rows = [{"workers": spec["workers"], "clips": clips, "clip": f"{shape['frames']}x{shape['height']}x{shape['width']}",
                 "clips/s": round(rate, 2), "clips/s/worker": round(rate / max(1, spec["workers"]), 2)}]
        notes = ["includes worker start-up; decoding by PyAV seek + range decode + swscale (ClipDataset)"]
        demand = self.results.get("base_train")
        if demand:
            need = demand["samples_per_s"]
            workers_needed = math.ceil(need / max(rate / max(1, spec["workers"]), 1e-9))
            rows[0].update({"step_demand_clips/s": round(need, 2), "starves": rate < need, "workers_needed": workers_needed})
            notes.append(f"the base step consumes {need:.2f} clips/s (batch {demand['batch']}, checkpointing {demand['checkpointing']}); "
                         f"the loader {'cannot keep up' if rate < need else 'keeps up'} with {spec['workers']} workers "
                         f"(joint images come from image manifests and are cheaper)")
        else:
            notes.append("no base step measured in this run: no demand to compare with")
        return {"rows": rows, "notes": notes}

    def section_decoder(self, budget: Budget) -> dict:
        import dataloader as loader_bench

        shape = self.profile["train"]["base"]
        result = loader_bench.compare(self.sources(), self.profile["decoder"]["clips"], (shape["height"], shape["width"]),
                                      num_frames=shape["frames"], scratch=self.scratch / "decoder", naive=False)
        return {"rows": result["rows"], "notes": result["notes"]}

    # -- curation actors on Ray --

    def section_curation(self, budget: Budget) -> dict:
        from lavie.curate.registry import get_stage
        from lavie.curate.runner import StagePlan, run_in_process, run_on_ray, shutdown_ray

        models = build_curation_models(self.scratch / "curation-models")
        clips = curation_rows(self.sources(), self.profile["curation"]["clips"])
        rows, notes = [], [f"tiny open_clip + LAION-head and SmolVLM2 models of the real architectures, {clips.num_rows} clips"]
        if not self.cuda:
            notes.append(f"{NO_CUDA}: num_gpus=1 actors need a GPU; the same stages ran in this process (the runner's run_in_process)")
        try:
            for name, kwargs in models.items():
                if budget.expired():
                    notes.append(f"{name}: out of time")
                    continue
                cls = get_stage(name)
                plan = StagePlan(cls, cls.Config(**kwargs), workers=1, batch_size=max(1, clips.num_rows // 2))
                t0 = time.perf_counter()
                if self.cuda:  # the runner asks the cluster for the GPU the stage declares
                    done = sum(block.num_rows for block in run_on_ray(clips, [plan], num_cpus=min(os.cpu_count() or 2, 8)))
                    placement = stage_placement(name, kwargs, num_gpus=1)
                else:
                    placement = "cpu (in process)"
                    done = sum(block.num_rows for block in run_in_process(iter([clips]), [plan]))
                seconds = time.perf_counter() - t0
                rows.append({"stage": name, "num_gpus": cls.resources(plan.config).gpus if self.cuda else 0, "model_device": placement, "clips": done,
                             "seconds": round(seconds, 2), "clips/s": round(done / seconds, 2)})
        finally:
            if self.cuda:
                shutdown_ray()
        notes.append("seconds include building the stage (model load) once per actor")
        return {"rows": rows, "notes": notes}

    # -- NVDEC --

    def section_nvdec(self, budget: Budget) -> dict:
        if not self.cuda:
            raise SectionSkipped(NO_CUDA)
        import av

        rows, notes = [], []
        cuvid = [c for c in ("h264_cuvid", "hevc_cuvid") if c in av.codecs_available]
        rows.append({"decoder": "PyAV *_cuvid", "available": bool(cuvid), "note": ",".join(cuvid) or "this PyAV build has no cuvid decoders"})
        paths = sorted(self.sources().rglob("*.mp4"))
        try:
            from torchcodec.decoders import VideoDecoder
        except Exception as err:
            rows.append({"decoder": "torchcodec", "available": False, "note": f"{type(err).__name__}: {str(err)[:100]}"})
            return {"rows": rows, "notes": notes}
        for device in ("cpu", "cuda"):
            if budget.left() < 2:
                break
            try:
                t0 = time.perf_counter()
                frames = 0
                for path in paths:
                    decoder = VideoDecoder(str(path), device=device, seek_mode="approximate")
                    n = min(64, decoder.metadata.num_frames or 64)
                    frames += decoder.get_frames_in_range(0, n).data.shape[0]
                synchronize(self.device)
                seconds = time.perf_counter() - t0
                fallback = str(getattr(decoder, "cpu_fallback", "")) if device == "cuda" else ""
                rows.append({"decoder": f"torchcodec {device}", "available": True, "frames": frames,
                             "frames/s": round(frames / seconds, 1), "note": fallback[:100] or None})
            except Exception as err:
                rows.append({"decoder": f"torchcodec {device}", "available": False, "note": f"{type(err).__name__}: {str(err)[:100]}"})
        rates = {r["decoder"]: r.get("frames/s") for r in rows}
        if rates.get("torchcodec cuda") and rates.get("torchcodec cpu"):
            notes.append(f"NVDEC / CPU (one decoder thread): {rates['torchcodec cuda'] / rates['torchcodec cpu']:.2f}x")
        return {"rows": rows, "notes": notes}

    # -- hygiene --

    def section_hygiene(self, budget: Budget) -> dict:
        shape = self.shape("base")
        unet = build_unet("base", self.shapes, self.device)
        trainer = Trainer(unet, shape, self.device)
        rows, notes = [], []
        # 1. an impossible batch: a clear message, memory given back, the next step runs
        if self.cuda:
            impossible = self.profile["hygiene"]["impossible_batch"]
            trainer.step(make_batch(shape, 1, self.device))
            synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            fits, message = try_step(trainer, shape, impossible)
            after = torch.cuda.memory_allocated(self.device)
            recovered, _ = try_step(trainer, shape, 1)
            rows.append({"check": f"batch {impossible}", "ok": (not fits) and recovered and after <= before * 1.01 + 2**20,
                         "detail": f"{'fits?!' if fits else 'out of memory'}; allocated {before / 2**30:.2f} -> {after / 2**30:.2f} GiB; "
                                   f"next step {'ran' if recovered else 'failed'}"})
            if message:
                notes.append(f"batch {impossible}: {message[:200]}")
        else:
            rows.append({"check": "impossible batch", "ok": None, "detail": f"{NO_CUDA} (a CPU would swap or be killed, not raise)"})
        # 2. a non-finite loss under bf16: the step is skipped and the weights stay as they were
        batch = make_batch(shape, 1, self.device)
        poisoned = dict(batch, noisy=batch["noisy"].clone())
        poisoned["noisy"][0, 0, 0, 0, 0] = float("nan")
        weights = [p.detach().clone() for p in trainer.params[:8]]
        loss = trainer.step(poisoned)
        unchanged = all(torch.equal(a, p.detach()) for a, p in zip(weights, trainer.params[:8]))
        rows.append({"check": "NaN in the input, bf16", "ok": math.isnan(loss) and unchanged and trainer.skipped == 1,
                     "detail": f"loss {loss}; step skipped: {trainer.skipped == 1}; weights unchanged: {unchanged}"})
        loss = trainer.step(batch)
        moved = any(not torch.equal(a, p.detach()) for a, p in zip(weights, trainer.params[:8]))
        finite = all(torch.isfinite(p).all() for p in trainer.params)
        rows.append({"check": "next finite step", "ok": math.isfinite(loss) and moved and finite,
                     "detail": f"loss {loss:.4f}; weights moved: {moved}; all finite: {finite}"})
        large = dict(batch, noisy=batch["noisy"] * 1e4)  # far past fp16's range, inside bf16's
        with torch.no_grad():
            big = trainer.loss(large).item()
        rows.append({"check": "latents x1e4 under bf16", "ok": math.isfinite(big), "detail": f"loss {big:.4g} (fp16 tops out at 65504)"})
        return {"rows": rows, "notes": notes, "status": "ok" if all(r["ok"] is not False for r in rows) else "failed"}


def _fmt_losses(losses: list[float]) -> str:
    return " ".join(f"{v:.5f}" for v in losses)


# --- distributed worker -----------------------------------------------------------------------------


def distributed_losses(tiny: bool, spec: dict, rank: int, world: int, accelerator, device: torch.device) -> dict:
    """`spec["steps"]` AdamW steps of the base UNet on a fixed global batch; this rank's share of
    it, losses averaged over ranks. Without `accelerator`: one process on the whole batch."""
    config = yaml.safe_load(CONFIG.read_text())
    profile = config["profiles"]["tiny" if tiny else "full"]
    shapes = config["shapes"]["tiny" if tiny else "full"]
    shape = train_shape("base", {**spec, "n_images": 0}, shapes, profile["text_tokens"])
    torch.manual_seed(0)  # the same initial weights in every process (and DDP / FSDP broadcast rank 0's anyway)
    unet = build_unet("base", shapes, device)
    unet.enable_gradient_checkpointing()
    unet.train()
    per_rank = spec["batch_per_process"]
    amp = torch.bfloat16 if device.type == "cuda" else None
    if accelerator is not None:
        unet = accelerator.prepare(unet)
        optimizer = accelerator.prepare(torch.optim.AdamW(unet.parameters(), lr=1e-4))
    else:
        optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    losses, times = [], []
    reset_peak(device)
    for step in range(spec["steps"]):
        full = make_batch(shape, per_rank * world, torch.device("cpu"), seed=100 + step)
        if accelerator is not None:
            part = slice(rank * per_rank, (rank + 1) * per_rank)
            batch = {k: (v[part].to(device) if torch.is_tensor(v) else v) for k, v in full.items()}
        else:
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in full.items()}
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            pred = unet_forward(unet, "base", batch)
        loss = torch.nn.functional.mse_loss(pred.float(), batch["target"].float())
        if accelerator is not None:
            accelerator.backward(loss)
            loss = accelerator.reduce(loss.detach().reshape(1), reduction="mean")
        else:
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.item()))
    return {"losses": losses, "s_per_step": round(statistics.median(times), 4), "peak_gib": peak_gib(device)}


def worker_main(args: argparse.Namespace) -> int:
    options = json.loads(args.worker_options)
    config = yaml.safe_load(CONFIG.read_text())
    profile = config["profiles"]["tiny" if args.tiny else "full"]
    if args.worker == "distributed":
        from accelerate import Accelerator, FullyShardedDataParallelPlugin

        plugin = None
        if options["mode"] == "fsdp":
            # size-based wrapping: no dependence on the names of the network's block classes
            plugin = FullyShardedDataParallelPlugin(fsdp_version=1, sharding_strategy="FULL_SHARD", auto_wrap_policy="size_based_wrap",
                                                    min_num_params=int(2e7), use_orig_params=True, sync_module_states=True,
                                                    state_dict_type="FULL_STATE_DICT")
        cuda = torch.cuda.is_available()
        accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no", fsdp_plugin=plugin)
        result = distributed_losses(args.tiny, profile["distributed"], accelerator.process_index, accelerator.num_processes,
                                    accelerator, accelerator.device)
        result.update(num_processes=accelerator.num_processes, distributed_type=str(accelerator.distributed_type).split(".")[-1])
        if accelerator.is_main_process:
            Path(args.worker_out).write_text(json.dumps(result))
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return 0
    if args.worker == "compile":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        shapes = config["shapes"]["tiny" if args.tiny else "full"]
        shape = train_shape("base", profile["train"]["base"], shapes, profile["text_tokens"])
        spec = profile["variants"]
        unet = build_unet("base", shapes, device)
        batch = make_batch(shape, spec["batch"], device)
        eager = Trainer(unet, shape, device, ema=False)
        eager_s = statistics.median(timed_steps(eager, batch, spec["steps"]))
        compiled = torch.compile(unet)
        trainer = Trainer(compiled, shape, device, ema=False)
        t0 = time.perf_counter()
        trainer.step(batch)
        synchronize(device)
        compile_s = time.perf_counter() - t0
        compiled_s = statistics.median(timed_steps(trainer, batch, spec["steps"]))
        Path(args.worker_out).write_text(json.dumps({"eager_s": round(eager_s, 4), "compiled_s": round(compiled_s, 4),
                                                     "compile_s": round(compile_s, 1)}))
        return 0
    raise SystemExit(f"gpu.py: unknown --worker {args.worker!r}")


# --- sampling ------------------------------------------------------------------------------------


def build_cascade(shapes: dict, text_tokens: int, device: torch.device, dtype: torch.dtype) -> dict:
    """The three sampling stages with random full-size components (SD 1.4 text encoder and VAE for
    base and interpolation; the x4 upscaler's for super-resolution), built through the pipelines'
    constructors with their registered component names."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from lavie import pipelines
    from lavie.model.tiny import build_tokenizer

    def pipeline_class(name: str):  # diffusers-native names first, the earlier ones otherwise
        return getattr(pipelines, f"LaVie{name}", None) or getattr(pipelines, name)

    TextToVideoPipeline, InterpolationPipeline = pipeline_class("TextToVideoPipeline"), pipeline_class("InterpolationPipeline")
    VideoSuperResolutionPipeline = pipeline_class("VideoSuperResolutionPipeline")
    tokenizer = build_tokenizer(text_tokens)

    def text_encoder(config: dict):
        return CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **config))

    torch.manual_seed(0)
    with torch.device(device):
        sd_text, sd_vae = text_encoder(shapes["sd14_text"]), AutoencoderKL(**shapes["sd14_vae"])
        x4_text, x4_vae = text_encoder(shapes["x4_text"]), AutoencoderKL(**shapes["x4_vae"])
    # LaVie's base sampler schedule (linear betas 1e-4..0.02); the x4 upscaler's v-prediction schedule
    schedule = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipes = {
        "base": TextToVideoPipeline(tokenizer=tokenizer, text_encoder=sd_text, vae=sd_vae, unet=build_unet("base", shapes, device),
                                    scheduler=DDIMScheduler(beta_schedule="linear", **schedule)),
        "interp": InterpolationPipeline(tokenizer=tokenizer, text_encoder=sd_text, vae=sd_vae, unet=build_unet("interp", shapes, device),
                                        scheduler=DDIMScheduler(beta_schedule="linear", **schedule)),
        "vsr": VideoSuperResolutionPipeline(tokenizer=tokenizer, text_encoder=x4_text, vae=x4_vae, unet=build_unet("vsr", shapes, device),
                                            scheduler=DDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction", **schedule),
                                            low_res_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                                                                            beta_schedule="scaled_linear"),
                                            max_noise_level=350),
    }
    for pipe in pipes.values():
        pipe.to(device=device, dtype=dtype)
    return pipes


def sample_stage(pipe, stage: str, video: torch.Tensor | None, steps: int, spec: dict) -> torch.Tensor:
    """One cascade stage through the pipeline's call; frames (B, 3, T, H, W) in [-1, 1] out.

    Speaks both call styles of `lavie.pipelines`: a tensor returned as is, or a diffusers-style
    output whose `.frames` (`output_type="pt"`) are (B, T, 3, H, W) in [0, 1]."""
    prompt = "a corgi walking in the park at sunrise, oil painting style"
    params = inspect.signature(pipe.__call__).parameters
    kwargs = dict(num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator().manual_seed(0))
    if "output_type" in params:
        kwargs["output_type"] = "pt"
    if stage == "base":
        out = pipe(prompt, num_frames=spec["frames"], height=spec["height"], width=spec["width"], **kwargs)
    elif stage == "interp":
        out = pipe(prompt, video, factor=4, **kwargs)
    else:
        names = ("chunk_size", "chunk_overlap") if "chunk_size" in params else ("window", "overlap")
        out = pipe(prompt, video, noise_level=50, **{names[0]: spec["window"], names[1]: spec["overlap"]}, **kwargs)
    if hasattr(out, "frames"):
        return out.frames.permute(0, 2, 1, 3, 4) * 2 - 1  # (B, T, 3, H, W) in [0, 1] -> (B, 3, T, H, W) in [-1, 1]
    return out


# --- curation models and clips -----------------------------------------------------------------------


def write_test_clip(path: Path, seed: int, frames: int = 24, size: tuple[int, int] = (96, 64), fps: int = 24) -> None:
    """A short h264 clip: a coloured square moving over noise."""
    import av

    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    colour = rng.integers(0, 255, 3, dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for t in range(frames):
            img = background.copy()
            x = (t * 3) % (size[0] - 16)
            img[16:32, x:x + 16] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build_curation_models(root: Path) -> dict[str, dict]:
    """Tiny models of the real curation architectures, saved as published ones are loaded:
    an open_clip ViT (`local-dir:` folder) with the LAION aesthetic head, and a SmolVLM2
    captioner with its processor and chat template. Returns each stage's kwargs."""
    import open_clip
    from safetensors.torch import save_file

    from lavie.curate.aesthetic import AestheticHead

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    clip_cfg = {"embed_dim": 32, "quick_gelu": True,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
                "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (root / "clip").mkdir(exist_ok=True)
    (root / "clip" / "open_clip_config.json").write_text(json.dumps({"model_cfg": clip_cfg, "preprocess_cfg": {}}))
    clip_model = open_clip.CLIP(**clip_cfg)
    save_file({k: v.contiguous() for k, v in clip_model.state_dict().items()}, str(root / "clip" / "open_clip_model.safetensors"))
    head = AestheticHead(32)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(root / "head.safetensors"))
    return {
        "clip": {"head": str(root / "head.safetensors"), "clip_model": f"local-dir:{root / 'clip'}", "clip_pretrained": None,
                 "category": False},
        "caption": {"model": build_tiny_smolvlm(root / "smolvlm"), "frames": 2, "max_new_tokens": 8},
    }


def build_tiny_smolvlm(path: Path) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor,
                              SmolVLMProcessor, SmolVLMVideoProcessor)

    special = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>", "<global-img>",
               "<video>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["a red square moves left across a blue field", "describe this video in one sentence"] * 10,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=special, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                              "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>", "video_token": "<video>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in special[:7]}
    image_size, patch = 32, 8
    config = SmolVLMConfig(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=ids["<|im_start|>"],
                         eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=patch),
        scale_factor=2, image_token_id=ids["<image>"])
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)
    template = ("<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
                "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
                "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
                "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}"
                "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")
    size = {"longest_edge": image_size}
    SmolVLMProcessor(image_processor=SmolVLMImageProcessor(size=size, max_image_size=size, do_image_splitting=False),
                     video_processor=SmolVLMVideoProcessor(size=size, max_image_size=size), tokenizer=tok, chat_template=template,
                     image_seq_len=(image_size // patch) ** 2 // config.scale_factor**2).save_pretrained(path)
    return str(path)


def curation_rows(raw: Path, count: int):
    """`count` clip rows (clip files cut from the sources) as a clips-manifest table."""
    from lavie.curate.manifest import conform
    from lavie.curate.probe import probe

    rows = []
    videos = sorted(raw.rglob("*.mp4"))
    for i in range(count):
        path = videos[i % len(videos)]
        info = probe(path)
        rows.append({"clip_id": f"clip-{i}", "kind": "video", "source_path": str(path), "clip_path": str(path), "start_frame": 0,
                     "end_frame": int(info.num_frames), "num_frames": int(info.num_frames), "fps": float(info.fps),
                     "width": int(info.width), "height": int(info.height), "status": "ok", "keep": True})
    return conform(rows, "clips")


def stage_placement(name: str, kwargs: dict, num_gpus: int) -> str:
    """Where a stage's model lands inside a Ray worker that holds `num_gpus` GPUs."""
    import ray

    @ray.remote(num_gpus=num_gpus, num_cpus=1)
    def placed(stage_name: str, stage_kwargs: dict) -> str:
        import torch as _torch

        from lavie.curate.registry import get_stage

        cls = get_stage(stage_name)
        stage = cls(cls.Config(**stage_kwargs))
        stage.setup()
        devices = set()
        for value in list(vars(stage).values()) + [getattr(v, "model", None) for v in vars(stage).values()]:
            if isinstance(value, _torch.nn.Module):
                devices.update(str(p.device) for p in value.parameters())
        return ",".join(sorted(devices)) or "no torch module found"

    return ray.get(placed.remote(name, kwargs), timeout=300)


# --- CLI ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu-check-out", help="folder for gpu-check.json and gpu-check.txt")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (the test suite's run)")
    parser.add_argument("--sections", default=None, help="comma-separated subset of the sections, in the run's order")
    parser.add_argument("--total-s", type=float, default=None, help="the whole run's time limit (default: the profile's)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every section's budget and the run's limit (a slower device or a busy machine)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of a device missing from the table")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))  # benchmarks/dataloader.py, the decoder peer
    if args.worker:
        return worker_main(args)
    wanted = SECTIONS if args.sections is None else [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"gpu.py: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return EXIT_USAGE
    if args.budget_scale <= 0:
        print(f"gpu.py: --budget-scale must be positive, got {args.budget_scale:g}", file=sys.stderr)
        return EXIT_USAGE
    if not args.tiny and not torch.cuda.is_available():
        print("gpu.py: no CUDA device; run with --tiny for the CPU check at tiny sizes", file=sys.stderr)
        return EXIT_USAGE
    check = GpuCheck(args, yaml.safe_load(CONFIG.read_text()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check.report = report = Report(out / "gpu-check.json")
    check.start_sources()
    report.write()
    if args.tiny:
        torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention on a shared machine

    def finish(cut_section: str | None = None) -> None:
        text = format_table(report.as_dict())
        (out / "gpu-check.txt").write_text(text + "\n")
        print("\n" + text, flush=True)
        if cut_section is not None:
            print(f"gpu.py: the run reached its time limit during {cut_section}; {report.path} holds what finished", flush=True)

    def on_cut(name: str | None) -> None:
        finish(name or "the run")
        check.close()
        os._exit(EXIT_CUT)

    total = args.total_s or float(check.profile["total_s"]) * args.budget_scale
    budgets = {name: seconds * args.budget_scale for name, seconds in check.profile["budgets"].items()}
    selected = [(n, fn) for n, fn in check.sections() if n in wanted]
    try:
        complete = run_sections(report, selected, budgets, total, on_cut=on_cut,
                                log=lambda m: print(m, flush=True))
        report.finished = complete
        report.write()
        finish()
    finally:
        check.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
