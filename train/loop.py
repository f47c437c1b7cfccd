"""The training recipe, top to bottom, after diffusers' text-to-image example: Accelerator ->
frozen VAE and text encoder -> trainable video UNet -> EMA -> save/load hooks writing
`save_pretrained` folders -> prepare -> the step loop with accumulation, clipping, logging,
checkpoints and validation.

The loop knows no stage by name: what differs between stages (models, loss, data, validation,
sampling pipeline, output folder) is the stage class's (`lavie.train.stages`).

A run folder holds `config.yaml`, `frozen/` (tokenizer, text encoder, VAE, schedulers and the
stage's `model_index.json`: saved once), `checkpoints/checkpoint-<step>/` (`unet/`, `unet_ema/`,
optimizer, LR scheduler, sampler and RNG states, links to `frozen/`: each checkpoint is itself a
stage folder that `lavie-sample` loads), `final/` (the EMA weights with copies of the frozen parts:
a stage folder; for `lora`, the adapter alone), `logs/` (TensorBoard), `metrics.jsonl` and
`validation/step-<step>/*.mp4`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from .config import TrainConfig, save_train_config
from .curriculum import CurriculumSampler, SourceSpec, WeightSchedule
from .data import ClipDataset, ClipGeometry, collate, load_source
from .latent_cache import LatentCache, build_latent_cache
from .models import StageModels
from .stages import TrainingStage, get_stage
from .validation import load_clip_similarity, run_validation

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NONFINITE = 3
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class RunCounters:
    """What the run has counted so far; checkpointed so a resumed run keeps counting."""

    def __init__(self):
        self.nonfinite_steps = 0
        self.decode_failures = 0

    def state_dict(self) -> dict:
        return {"nonfinite_steps": self.nonfinite_steps, "decode_failures": self.decode_failures}

    def load_state_dict(self, state: dict) -> None:
        self.nonfinite_steps = int(state["nonfinite_steps"])
        self.decode_failures = int(state["decode_failures"])


class MixLog:
    """The realised source mix: counts per source, summed over ranks when logged. `totals` is
    checkpointed so the mix of a resumed run continues the interrupted one. Fractions are within a
    source's group: the clip sources share the clips, the image sources the joint-training images."""

    def __init__(self, names: list[str], groups: list[int]):
        self.names = names
        self.groups = np.array(groups)
        self.window = np.zeros(len(names), dtype=np.int64)
        self.totals = np.zeros(len(names), dtype=np.int64)

    def record(self, sources: list[str]) -> None:
        for name in sources:
            self.window[self.names.index(name)] += 1

    def flush(self, accelerator: Accelerator) -> np.ndarray:
        """All ranks: add this window's counts to the totals; returns the window's global counts."""
        window = accelerator.reduce(torch.from_numpy(self.window).to(accelerator.device), reduction="sum").cpu().numpy()
        self.totals += window
        self.window[:] = 0
        return window

    def fractions(self, counts: np.ndarray) -> dict[str, float]:
        group_total = np.array([counts[self.groups == g].sum() for g in self.groups])
        return {n: float(c) / t for n, c, t in zip(self.names, counts, group_total) if t}

    def state_dict(self) -> dict:
        return {"names": list(self.names), "totals": self.totals.tolist()}

    def load_state_dict(self, state: dict) -> None:
        for name, count in zip(state["names"], state["totals"]):
            if name in self.names:
                self.totals[self.names.index(name)] = count


def seed_for(*keys: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def find_checkpoint(run_dir: Path, resume: str) -> Path:
    """`latest` -> the highest-step checkpoint of the run; anything else is a checkpoint path."""
    if resume != "latest":
        path = Path(resume)
        if not (path / "unet").is_dir() and not (path / "pytorch_lora_weights.safetensors").is_file():
            raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no unet/ nor LoRA weights)")
        return path
    found = sorted(((int(m.group(1)), p) for p in (run_dir / "checkpoints").glob("checkpoint-*")
                    if (m := CHECKPOINT.match(p.name))), key=lambda x: x[0])
    if not found:
        raise FileNotFoundError(f"--resume latest: no checkpoint in {run_dir / 'checkpoints'}")
    return found[-1][1]


# --- data ---------------------------------------------------------------------------------------


def build_data(config: TrainConfig, stage: TrainingStage, accelerator: Accelerator, models: StageModels, run_dir: Path):
    d = config.data
    needs = stage.data_needs()
    geometry = ClipGeometry(d.num_frames, d.target_fps, d.height, d.width, "center" if d.cache_latents else d.crop)
    sources = [load_source(s.name, s.manifest, s.kind) for s in config.data.sources]
    specs = [SourceSpec(i, s.name, WeightSchedule(s.weight, f"data.sources[{i}].weight"), len(src), s.kind)
             for i, (s, src) in enumerate(zip(config.data.sources, sources))]
    if needs.images == "clips":  # images become clips by translation (LaVie App. C)
        video_specs, image_specs, n_images = specs, [], 0
    else:
        video_specs = [s for s in specs if s.kind == "video"]
        image_specs = [s for s in specs if s.kind == "image"] if needs.images == "joint" else []
        n_images = needs.n_images if needs.images == "joint" else 0
    max_translation = config.lora.max_translation if config.stage == "lora" else config.vsr.max_translation
    dataset = ClipDataset(sources, geometry, images_as_clips=needs.images == "clips", max_translation=max_translation,
                          max_retries=d.max_retries)
    if d.cache_latents:
        cache = LatentCache(d.cache_dir or run_dir / "latents", geometry.key)
        written, failed = build_latent_cache(dataset, cache, models.vae, accelerator.process_index, accelerator.num_processes,
                                             num_workers=d.num_workers)
        logger.info("latent cache %s: %d clips encoded, %d failed (rank %d)", cache.root, written, failed, accelerator.process_index)
        accelerator.wait_for_everyone()
        dataset.cache = cache
    sampler = CurriculumSampler(video_specs, image_specs, d.batch_size, n_images, config.train.gradient_accumulation_steps,
                                config.seed, accelerator.process_index, end_step=config.train.max_steps)
    image_names = {s.name for s in image_specs}
    return dataset, sampler, [s.name for s in specs], [int(s.name in image_names) for s in specs]


def make_loader(dataset: ClipDataset, sampler: CurriculumSampler, config: TrainConfig, device: torch.device):
    workers = config.data.num_workers
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                       pin_memory=config.data.pin_memory and device.type == "cuda",
                                       prefetch_factor=2 if workers else None, persistent_workers=False)


# --- the run --------------------------------------------------------------------------------------


def train(config: TrainConfig, resume: str | None = None) -> int:
    """Train one stage as `config` says; returns the process exit code."""
    run_dir = Path(config.output_dir)
    if config.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)

    # 1. accelerator (mixed precision, DDP / FSDP, trackers); accumulation is done below by hand
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # lets torchrun/accelerate launch run gloo DDP on CPU hosts
        mixed_precision="no" if config.train.mixed_precision == "fp32" else config.train.mixed_precision,
        log_with=None if config.logging.report_to == "none" else config.logging.report_to,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
    )
    set_seed(config.seed)
    if torch.cuda.is_available() and config.train.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    main = accelerator.is_main_process
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_train_config(config, run_dir / "config.yaml")

    # 2. models of the stage: frozen VAE and text encoder in the compute dtype, the trainable UNet in fp32
    stage = get_stage(config.stage)(config)
    with accelerator.main_process_first():
        models = stage.load_models(stage.model_folder(run_dir / "init"))
    weight_dtype = stage.weight_dtype
    for frozen in (models.vae, models.text_encoder):
        frozen.to(accelerator.device)
        if frozen.dtype != weight_dtype:
            frozen.to(dtype=weight_dtype)
    unet = models.unet
    if config.model.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    if main:
        stage.save_frozen(models, run_dir / "frozen")
    trainable = [p for p in unet.parameters() if p.requires_grad]
    logger.info("stage %s: %.2fM of %.2fM UNet parameters trainable", config.stage,
                sum(p.numel() for p in trainable) / 1e6, sum(p.numel() for p in unet.parameters()) / 1e6)

    # 3. EMA of the weights (diffusers EMAModel)
    ema = None
    if config.ema.enabled and accelerator.distributed_type == DistributedType.FSDP:
        raise ValueError("ema.enabled with FSDP: EMAModel averages whole parameters, FSDP shards them; set ema.enabled=false")
    if config.ema.enabled:
        ema = EMAModel(unet.parameters(), decay=config.ema.decay, update_after_step=config.ema.update_after_step,
                       use_ema_warmup=config.ema.use_warmup, inv_gamma=config.ema.inv_gamma, power=config.ema.power,
                       model_cls=type(unet), model_config=dict(unet.config))
        ema.to(accelerator.device)

    # 4. checkpoints as save_pretrained folders: the hooks replace accelerate's own model files
    def save_hook(hook_models, weights, output_dir):
        if main:
            if ema is not None:
                ema.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in hook_models:
                stage.save_network(accelerator.unwrap_model(model), Path(output_dir))
        while weights:
            weights.pop()

    def load_hook(hook_models, input_dir):
        if ema is not None:
            saved = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), type(unet))
            ema.load_state_dict(saved.state_dict())
            ema.to(accelerator.device)
        while hook_models:
            stage.load_network(accelerator.unwrap_model(hook_models.pop()), Path(input_dir))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)

    # 5. optimizer and learning-rate schedule (warm-up, then diffusers get_scheduler's shape)
    lr = config.train.learning_rate
    accumulation = config.train.gradient_accumulation_steps
    if config.train.scale_lr:
        lr *= accumulation * config.data.batch_size * accelerator.num_processes
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=(config.train.adam_beta1, config.train.adam_beta2),
                                  weight_decay=config.train.adam_weight_decay, eps=config.train.adam_epsilon)
    lr_scheduler = get_scheduler(config.train.lr_scheduler, optimizer,
                                 num_warmup_steps=config.train.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=config.train.max_steps * accelerator.num_processes)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    # 6. data: manifests -> curriculum sampler -> decoding workers
    dataset, sampler, source_names, source_groups = build_data(config, stage, accelerator, models, run_dir)
    counters, mix = RunCounters(), MixLog(source_names, source_groups)
    for obj in (sampler, counters, mix):
        accelerator.register_for_checkpointing(obj)

    # 7. resume: weights, EMA, optimizer, LR schedule, sampler position, counters, RNG states
    step = 0
    if resume:
        path = find_checkpoint(run_dir, resume)
        accelerator.load_state(str(path))
        step = sampler.start_step
        logger.info("resumed from %s at step %d", path, step)
    if step >= config.train.max_steps:
        logger.info("nothing to do: step %d >= train.max_steps %d", step, config.train.max_steps)
        accelerator.end_training()
        return EXIT_OK

    if accelerator.is_main_process and config.logging.report_to != "none":
        accelerator.init_trackers("lavie-train")
    scorer = val_inputs = None
    if config.validation.every and main:
        scorer = load_clip_similarity(config.validation.clip_model, accelerator.device)
        val_inputs = stage.validation_inputs(dataset)

    # 8. preemption: SIGTERM finishes the current step, writes a checkpoint and exits 0
    stop = {"requested": False}
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not the main thread: no handler, the default applies
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("requested", True))

    def checkpoint(at_step: int) -> Path:
        return save_checkpoint(accelerator, config, stage, run_dir, at_step, sampler, mix)

    # 9. the loop: one optimizer step = `accumulation` micro-batches on every rank
    sampler.start_step = step
    batches = iter(make_loader(dataset, sampler, config, accelerator.device))
    nonfinite_run, window_loss, window_parts, window_steps = 0, 0.0, {}, 0
    window_start, window_from = time.perf_counter(), step
    exit_code = EXIT_OK
    try:
        while step < config.train.max_steps:
            step_finite = True
            for micro in range(accumulation):
                batch = next(batches)
                mix.record(batch["sources"])
                counters.decode_failures += batch["failures"]
                generator = torch.Generator(accelerator.device).manual_seed(seed_for(config.seed, step, micro, accelerator.process_index))
                sync = micro == accumulation - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(unet):
                    with accelerator.autocast():
                        loss, parts = stage.loss(unet, models, batch, generator)
                    # all ranks agree to skip, so DDP never waits for a backward that will not come
                    finite = accelerator.reduce(torch.isfinite(loss.detach()).float().reshape(1), reduction="sum").item() == accelerator.num_processes
                    if finite:
                        accelerator.backward(loss / accumulation)
                        window_loss += loss.item() / accumulation
                        for k, v in parts.items():
                            window_parts[k] = window_parts.get(k, 0.0) + v.item() / accumulation
                    step_finite &= finite

            if step_finite:
                if config.train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, config.train.max_grad_norm)
                optimizer.step()
                if ema is not None:
                    ema.step(accelerator.unwrap_model(unet).parameters())
                nonfinite_run = 0
                window_steps += 1
            else:  # a non-finite loss: the step is skipped and counted
                counters.nonfinite_steps += 1
                nonfinite_run += 1
                logger.warning("step %d: non-finite loss, step skipped (%d in a row)", step + 1, nonfinite_run)
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            if step % config.logging.every == 0 or step == config.train.max_steps:
                elapsed = time.perf_counter() - window_start
                window = mix.flush(accelerator)
                steps_done = step - window_from
                mean_loss = accelerator.reduce(torch.tensor([window_loss / max(window_steps, 1)], device=accelerator.device), reduction="mean").item()
                record = {"step": step, "loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0],
                          "videos_per_s": steps_done * accumulation * config.data.batch_size * accelerator.num_processes / elapsed,
                          "s_per_step": elapsed / steps_done, "decode_failures": counters.decode_failures,
                          "nonfinite_steps": counters.nonfinite_steps,
                          **{k: v / max(window_steps, 1) for k, v in window_parts.items()}}
                record.update({f"mix/{n}": f for n, f in mix.fractions(window).items()})
                record.update({f"mix_total/{n}": int(c) for n, c in zip(mix.names, mix.totals)})
                log_metrics(accelerator, run_dir, record)
                window_loss, window_parts, window_steps = 0.0, {}, 0
                window_start, window_from = time.perf_counter(), step

            if nonfinite_run >= config.train.max_nonfinite_steps:
                path = checkpoint(step)
                accelerator.print(f"lavie-train: stopping at step {step}: {nonfinite_run} non-finite losses in a row "
                                  f"(train.max_nonfinite_steps={config.train.max_nonfinite_steps}). Checkpoint {path} holds the "
                                  f"last finite weights; lower train.learning_rate or check the data, then --resume latest.")
                exit_code = EXIT_NONFINITE
                break

            if config.validation.every and (step % config.validation.every == 0 or step == config.train.max_steps):
                validate_now(accelerator, config, stage, models, unet, ema, val_inputs, scorer, run_dir, step)

            stop_now = accelerator.reduce(torch.tensor([float(stop["requested"])], device=accelerator.device), reduction="sum").item() > 0
            if step % config.checkpoint.every == 0 or step == config.train.max_steps or stop_now:
                path = checkpoint(step)
            if stop_now:
                accelerator.print(f"lavie-train: SIGTERM received; checkpoint {path} written at step {step}. "
                                  f"Continue with: lavie-train ... --resume latest")
                break
        if exit_code == EXIT_OK and step >= config.train.max_steps and main:
            export_final(accelerator, stage, unet, ema, run_dir, config)
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
        accelerator.wait_for_everyone()
        accelerator.end_training()
    return exit_code


def log_metrics(accelerator: Accelerator, run_dir: Path, record: dict) -> None:
    if not accelerator.is_main_process:
        return
    step = record["step"]
    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    mix = " ".join(f"{k[4:]}={v:.2f}" for k, v in record.items() if k.startswith("mix/"))
    logger.info("step %d loss %.4f lr %.2e %.2f videos/s %s", step, record["loss"], record["lr"], record["videos_per_s"], mix)


def validate_now(accelerator, config, stage, models, unet, ema, inputs, scorer, run_dir: Path, step: int) -> None:
    """Main process: sample the validation inputs with the EMA weights (when on) into mp4s."""
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(unet)
        use_ema = ema is not None and config.validation.use_ema
        if use_ema:
            ema.store(model.parameters())
            ema.copy_to(model.parameters())
        try:
            scores = run_validation(stage, models, model, inputs, run_dir / "validation" / f"step-{step}",
                                    config.validation, accelerator.device, scorer)
        finally:
            if use_ema:
                ema.restore(model.parameters())
        if scores:
            log_metrics_scalar(accelerator, run_dir, step, scores)
        logger.info("validation at step %d: %d videos in %s %s", step, len(inputs), run_dir / "validation" / f"step-{step}",
                    f"CLIPSIM {scores['clipsim']:.4f}" if scores else "")
    accelerator.wait_for_everyone()


def log_metrics_scalar(accelerator, run_dir: Path, step: int, values: dict) -> None:
    accelerator.log({f"validation/{k}": v for k, v in values.items()}, step=step)
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": step, **{f"validation/{k}": v for k, v in values.items()}}) + "\n")


def save_checkpoint(accelerator: Accelerator, config: TrainConfig, stage: TrainingStage, run_dir: Path, step: int,
                    sampler: CurriculumSampler, mix: MixLog) -> Path:
    """All ranks: write `checkpoints/checkpoint-<step>` atomically (temp folder + rename), keep the last K."""
    ckpt_root = run_dir / "checkpoints"
    final = ckpt_root / f"checkpoint-{step}"
    tmp = ckpt_root / f".checkpoint-{step}.tmp"
    mix.flush(accelerator)
    sampler.start_step = step
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        frozen = run_dir / "frozen"
        for name in stage.checkpoint_links():
            if (frozen / name).exists():
                os.symlink(os.path.relpath(frozen / name, tmp), tmp / name)
        save_train_config(config, tmp / "config.yaml")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        kept = sorted((int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := CHECKPOINT.match(p.name)))
        for _, old in kept[: max(0, len(kept) - config.checkpoint.keep_last)]:
            shutil.rmtree(old)
        logger.info("checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def export_final(accelerator: Accelerator, stage: TrainingStage, unet, ema, run_dir: Path, config: TrainConfig) -> Path:
    """`final/`: the stage's output folder with the EMA weights (the live ones without EMA)."""
    out = run_dir / "final"
    shutil.rmtree(out, ignore_errors=True)
    model = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    try:
        stage.export(model, run_dir, out)
    finally:
        if ema is not None:
            ema.restore(model.parameters())
    save_train_config(config, out / "config.yaml")
    logger.info("final model folder %s", out)
    return out
