"""Input conditioning for the interpolation and prediction models.

Both concatenate latents the model should respect channel-wise to the noisy latents, through
zero-initialised input channels of `VideoUNet(conditioning=...)`: the interpolation model reads the
frame-repeated key-frame latents (`C` channels, as the released model), the context-frame
prediction model the masked context latents and their mask (`C + 1` channels).
"""

import torch


def interpolated_length(num_frames: int, factor: int = 4) -> int:
    """Frames after interpolating `num_frames` key frames `factor` times: 16 -> 61 at factor 4."""
    return factor * (num_frames - 1) + 1


def interpolation_conditioning(latents: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Conditioning of the temporal interpolation model (LaVie §3.2).

    LaVie duplicates the base video's frames to the target frame rate and concatenates them with the
    noisy high-frame-rate latents; every output frame is synthesised anew, key frames included. Key
    frame i sits at output frame `factor*i`; each in-between frame repeats its nearest key frame
    (the earlier one on a tie). At factor 4 this is the released sampler's layout: 16 key frames
    repeated 4 times, less the first and the last two, give 61 frames.

    latents: (B, C, T, H, W) key-frame latents. Returns (B, C, factor*(T-1)+1, H, W).
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    t = latents.shape[2]
    position = torch.arange(interpolated_length(t, factor), device=latents.device)
    nearest = torch.div(position + (factor - 1) // 2, factor, rounding_mode="floor").clamp(max=t - 1)  # (T_out,)
    return latents[:, :, nearest]  # (B, C, T_out, H, W)


def context_conditioning(latents: torch.Tensor, num_context: int) -> torch.Tensor:
    """Context-frame conditioning of a prediction model (Video LDM §3.2): `c_S = (m_S * z, m_S)`.

    The mask keeps the first `num_context` frames (S in {0, 1, 2} in training, so S = 0 doubles as
    the unconditional branch of context guidance) and hides the frames to predict.

    latents: (B, C, T, H, W) with the context frames first. Returns (B, C + 1, T, H, W).
    """
    b, _, t, h, w = latents.shape
    if not 0 <= num_context <= t:
        raise ValueError(f"num_context={num_context} must lie in [0, {t}]")
    mask = (torch.arange(t, device=latents.device) < num_context).to(latents.dtype)  # (T,)
    mask = mask.view(1, 1, t, 1, 1).expand(b, 1, t, h, w)
    return torch.cat([latents * mask, mask], dim=1)
