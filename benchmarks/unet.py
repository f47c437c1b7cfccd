"""Forward+backward time and peak memory of `VideoUNet` against diffusers' `UNetMotionModel`
(AnimateDiff's temporal design), both inflated from the same image UNet, same frames and size.

    python benchmarks/unet.py                      # SD 1.4 layout at width 256, 16 frames, CPU or CUDA
    python benchmarks/unet.py --width 320 --size 40 --frames 16 --device cuda   # SD 1.4 itself, 320x320 px

Times are the fastest of `--repeats` steps, the two models alternating. Peak memory comes from one
step of each model in its own process: on CUDA `max_memory_allocated`, on
CPU the rise of the peak resident set size (`ru_maxrss`) over the resident size before the first
forward pass. Prints the two rows and the ratios VideoUNet / UNetMotionModel (targets: time <= 1.1,
memory <= 1.0 with gradient checkpointing).
"""

import argparse
import multiprocessing as mp
import os
import resource
import time

MODELS = ("VideoUNet", "UNetMotionModel")


def image_unet_config(width: int) -> dict:
    # SD 1.4's layout (4 levels, 2 resnets per level, cross-attention in the first three), channels scaled
    return dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(width, 2 * width, 4 * width, 4 * width),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768 if width == 320 else 2 * width, attention_head_dim=8,
    )


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(name: str, args: argparse.Namespace):
    import torch
    from diffusers import UNet2DConditionModel, UNetMotionModel

    from lavie.model import VideoUNet

    torch.manual_seed(0)
    config = image_unet_config(args.width)
    unet2d = UNet2DConditionModel(**config)
    model = VideoUNet.from_unet2d(unet2d) if name == "VideoUNet" else UNetMotionModel.from_unet2d(unet2d)
    device = torch.device(args.device)
    model = model.to(device).train()
    if args.checkpointing:
        model.enable_gradient_checkpointing()
    sample = torch.randn(args.batch, 4, args.frames, args.size, args.size, device=device)
    text = torch.randn(args.batch, 77, config["cross_attention_dim"], device=device)
    if name == "UNetMotionModel":  # it expects one prompt embedding per frame; VideoUNet repeats internally
        text = text.repeat_interleave(args.frames, dim=0)

    def step():
        model.zero_grad(set_to_none=True)
        model(sample, 500, text).sample.square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    is_temporal = model.is_temporal_parameter if name == "VideoUNet" else (lambda n: "motion_modules" in n)
    temporal = sum(p.numel() for n, p in model.named_parameters() if is_temporal(n))
    return step, temporal


def peak_memory(name: str, args: argparse.Namespace, queue) -> None:
    """One forward+backward in a fresh process, so the peak belongs to this model alone."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    step, temporal = build(name, args)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
    step()
    peak = torch.cuda.max_memory_allocated() - base if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    queue.put((max(peak, 0), temporal))


def step_times(args: argparse.Namespace) -> dict[str, float]:
    """Fastest forward+backward of each model, the two alternating step by step so that a busy
    machine slows both alike."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    steps = {name: build(name, args)[0] for name in MODELS}
    for step in steps.values():
        step()  # warm-up
    times = {name: [] for name in MODELS}
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=256, help="first-level channels (SD 1.4: 320); 8 heads, so at least 256 for the 32-dim RoPE")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=16, help="latent height and width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    p.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    args = p.parse_args()

    ctx = mp.get_context("spawn")
    memory = {}
    for name in MODELS:
        queue = ctx.Queue()
        proc = ctx.Process(target=peak_memory, args=(name, args, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"{name} benchmark failed (exit code {proc.exitcode}); see its traceback above")
        memory[name] = queue.get()
    seconds = step_times(args)
    results = {name: (seconds[name], *memory[name]) for name in MODELS}

    memory_kind = "CUDA max_memory_allocated" if args.device.startswith("cuda") else "CPU peak RSS rise"
    print(f"device={args.device} width={args.width} frames={args.frames} latent={args.size}x{args.size} "
          f"batch={args.batch} gradient_checkpointing={args.checkpointing}")
    print(f"{'model':<18}{'fwd+bwd s':>12}{'peak MiB':>12}{'temporal params':>18}   ({memory_kind})")
    for name in MODELS:
        seconds, peak, temporal = results[name]
        print(f"{name:<18}{seconds:>12.3f}{peak / 2**20:>12.1f}{temporal:>18,}")
    (t_ours, m_ours, _), (t_peer, m_peer, _) = results["VideoUNet"], results["UNetMotionModel"]
    print(f"time ratio VideoUNet/UNetMotionModel = {t_ours / t_peer:.3f} (target <= 1.1)")
    print(f"peak memory ratio VideoUNet/UNetMotionModel = {m_ours / m_peer:.3f} (target <= 1.0)")


if __name__ == "__main__":
    main()
