"""Load the released LaVie checkpoints into this package's networks.

LaVie's authors released `lavie_base.pt`, `lavie_interpolation.pt` and `lavie_vsr.pt`: state dicts
of their base (§3.1), interpolation (§3.2) and video super-resolution (§3.3) UNets, inflated from
Stable Diffusion 1.4 and the SD x4 upscaler. `VideoUNet` / `VideoSRUNet` in the released layouts
(`LAYOUTS`) compute what those networks compute; this module renames their tensors:

    from lavie.model.convert import from_official_checkpoint
    unet = from_official_checkpoint("pretrained_models/lavie_base.pt",
                                    "pretrained_models/stable-diffusion-v1-4/unet", "base")

The image UNet folder provides the architecture (its `config.json`); every weight comes from the
checkpoint. Every tensor of the checkpoint is consumed, except the fixed rotary-frequency tables,
which are checked to hold the standard values and dropped (this package computes them).
"""

from pathlib import Path

import torch

from .video_unet import VideoSRUNet, VideoUNet, layout_options

STAGES = ("base", "interp", "vsr")
OFFICIAL_FILES = {"base": "lavie_base.pt", "interp": "lavie_interpolation.pt", "vsr": "lavie_vsr.pt"}
IMAGE_MODELS = {"base": "stable-diffusion-v1-4", "interp": "stable-diffusion-v1-4", "vsr": "stable-diffusion-x4-upscaler"}

# official module names -> ours, one dotted segment at a time
_NAMES = {
    "base": {"attn_temp": "temporal_attn", "norm_temp": "temporal_norm", "time_rel_pos_bias": "rel_pos_bias"},
    "interp": {"attn_temp": "temporal_attn", "norm_temp": "temporal_norm"},
    "vsr": {"attn_temporal": "temporal_attn", "norm_temporal": "temporal_norm", "time_rel_pos_bias": "rel_pos_bias",
            "resblock_temporal": "temporal_conv"},
}
# the VSR model's block-level temporal modules, at the top level of both networks
_MODULE_NAMES = {"resblocks_3d_t": "temporal_conv", "resblocks_3d_s": "spatial_resnet"}
_TOP_LEVEL = ("down_temporal_blocks.", "mid_temporal_block.", "up_temporal_blocks.")
ROPE_DIM, ROPE_THETA = 32, 10000.0


class ConversionError(ValueError):
    """A checkpoint or image model that does not convert; the message names the file or tensor."""


def load_official_state_dict(checkpoint: str | Path | dict) -> dict[str, torch.Tensor]:
    """The UNet state dict of an official checkpoint: the file's dict itself, or its `"ema"` entry."""
    if isinstance(checkpoint, dict):
        state = checkpoint
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise ConversionError(f"checkpoint {path} not found (download lavie_base.pt, lavie_interpolation.pt, lavie_vsr.pt from the LaVie release)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for files that are not checkpoints
            raise ConversionError(f"{path} is not a PyTorch checkpoint: {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("ema"), dict):
        state = state["ema"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{checkpoint if not isinstance(checkpoint, dict) else 'the checkpoint'} holds no state dict of tensors")
    return state


def detect_stage(state: dict[str, torch.Tensor]) -> str:
    """Which released network a state dict belongs to, from its tensor names and input channels."""
    if any(".attn_temporal." in k or k.startswith(_TOP_LEVEL) for k in state):
        return "vsr"
    if any(".attn_temp." in k for k in state):
        conv_in = state.get("conv_in.weight")
        if conv_in is None:
            raise ConversionError("the checkpoint has temporal layers but no conv_in.weight: not a LaVie UNet")
        return "interp" if conv_in.shape[1] == 2 * 4 else "base"
    raise ConversionError("the checkpoint has no LaVie temporal layers (attn_temp / attn_temporal): not a LaVie UNet checkpoint")


def official_key(key: str, stage: str) -> str | None:
    """Our name of an official tensor; None for the rotary-frequency tables, which are computed."""
    if key.endswith("rotary_emb.freqs"):
        return None
    if key.startswith(_TOP_LEVEL):
        return ".".join(_MODULE_NAMES.get(part, part) for part in key.split("."))
    return "unet2d." + ".".join(_NAMES[stage].get(part, part) for part in key.split("."))


def to_official_state_dict(model: VideoUNet, stage: str) -> dict[str, torch.Tensor]:
    """The state dict of `model` named as the released LaVie code names it, rotary-frequency tables
    included, so a network fine-tuned here loads into the official sampling scripts."""
    names = {ours: theirs for theirs, ours in _NAMES[stage].items()}
    modules = {ours: theirs for theirs, ours in _MODULE_NAMES.items()}
    freqs = 1.0 / ROPE_THETA ** (torch.arange(0, ROPE_DIM, 2)[: ROPE_DIM // 2].float() / ROPE_DIM)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("unet2d."):
            key = ".".join(names.get(part, part) for part in key[len("unet2d."):].split("."))
            if key.endswith(".to_q.weight") and stage != "interp" and (".attn_temp." in key or ".attn_temporal." in key):
                state[key[: -len("to_q.weight")] + "rotary_emb.freqs"] = freqs.clone()
        else:
            key = ".".join(modules.get(part, part) for part in key.split("."))
        state[key] = value
    if stage == "vsr":
        state["temporal_rotary_emb.freqs"] = freqs.clone()
    return state


def check_rotary_frequencies(key: str, freqs: torch.Tensor, dim: int = ROPE_DIM, theta: float = ROPE_THETA) -> None:
    standard = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
    if freqs.shape != standard.shape or not torch.allclose(freqs.float(), standard, rtol=1e-5, atol=0):
        raise ConversionError(f"{key} does not hold the standard {dim}-dim rotary frequencies (base {theta:g}); this network computes only those")


def from_official_checkpoint(checkpoint: str | Path | dict, unet2d: str | Path | dict, stage: str) -> VideoUNet:
    """Build our network of `stage` holding an official LaVie checkpoint, in eval mode.

    Args:
        checkpoint: the official `.pt` (the state dict itself, or under `"ema"`), or its state dict.
        unet2d: the folder of the diffusers 2-D UNet the official model was inflated from
            (`stable-diffusion-v1-4/unet` for base and interp, `stable-diffusion-x4-upscaler/unet`
            for vsr), or its config dict. Only its config is read.
        stage: `"base"`, `"interp"` or `"vsr"`.

    Calls of the result: base `model(sample, t, text)`; interp `model(sample, t, text, cond=cond)`
    with `cond` (B, 4, T, H, W) the frame-repeated key-frame latents; vsr
    `model(sample, t, text, low_res=low_res, noise_level=noise_level)`.
    """
    if stage not in STAGES:
        raise ConversionError(f"stage={stage!r}: choose one of {STAGES}")
    state = load_official_state_dict(checkpoint)
    found = detect_stage(state)
    if found != stage:
        raise ConversionError(f"the checkpoint holds the {found} network, not {stage} (expected {OFFICIAL_FILES[stage]})")
    config = _image_config(unet2d)

    cls = VideoSRUNet if stage == "vsr" else VideoUNet
    try:
        model = cls(unet2d_config=config, **layout_options(stage))
    except ValueError as error:
        raise ConversionError(f"cannot inflate the image model {unet2d}: {error}") from None
    own = model.state_dict()

    mapped = {}
    for key, value in state.items():
        ours = official_key(key, stage)
        if ours is None:
            check_rotary_frequencies(key, value)
            continue
        if ours not in own:
            raise ConversionError(f"unknown tensor {key!r} in the checkpoint: no such layer in a {stage} network built from {unet2d}")
        if own[ours].shape != value.shape:
            raise ConversionError(f"tensor {key!r} has shape {tuple(value.shape)} in the checkpoint but {tuple(own[ours].shape)} "
                                  f"in a {stage} network built from {unet2d}: is it the image model {IMAGE_MODELS[stage]}?")
        mapped[ours] = value
    missing = [k for k in own if k not in mapped]
    if missing:
        raise ConversionError(f"the checkpoint lacks {len(missing)} tensors of the {stage} network, e.g. {missing[0]!r}: is it the image model {IMAGE_MODELS[stage]}?")
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def _image_config(unet2d) -> dict:
    from diffusers import UNet2DConditionModel

    if isinstance(unet2d, dict):
        return {k: v for k, v in unet2d.items() if not k.startswith("_")}
    folder = Path(unet2d)
    if not (folder / "config.json").is_file():
        raise ConversionError(f"image UNet folder {folder} has no config.json (give e.g. pretrained_models/{IMAGE_MODELS['base']}/unet)")
    return {k: v for k, v in UNet2DConditionModel.load_config(folder).items() if not k.startswith("_")}
