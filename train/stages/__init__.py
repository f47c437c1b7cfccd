"""Training stages: one class per stage in `<name>.py`, all following `contract.TrainingStage`.

| stage  | trains                                                        | paper            |
|--------|---------------------------------------------------------------|------------------|
| base   | text-to-video key frames, joint image-video batches           | LaVie §3.1       |
| interp | temporal interpolation 16 -> 61 frames from a base model      | LaVie §3.2       |
| vsr    | video super-resolution from the SD x4 upscaler                | LaVie §3.3       |
| long   | long videos: the first frame as zero-initialised input        | LaVie §4.4       |
| lora   | personalised videos: LoRA on the spatial attention (peft)     | LaVie §4.4       |

`get_stage(name)` imports a built-in stage on first use; `@register_stage` adds any other.
"""

from .contract import BUILTIN, DataNeeds, TrainingStage, get_stage, register_stage, stage_names

__all__ = ["BUILTIN", "DataNeeds", "TrainingStage", "get_stage", "register_stage", "stage_names"]
