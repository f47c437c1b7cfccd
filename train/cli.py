"""`lavie-train`: train a stage of the LaVie cascade on curated manifests."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap

from lavie.usage import OneLineParser, one_line, usage_error

from .config import STAGES, describe_keys, load_train_config
from .preflight import preflight

EXIT_STATUS = """\
exit status: 0 trained (or stopped by SIGTERM with a checkpoint written);
2 usage or configuration error, in one line before any model is built: an unknown key (named as
  given, on the command line or in the file), malformed YAML, a missing or uncaptioned manifest,
  model.tiny together with model.pretrained, an output_dir that already holds a run without --resume;
3 stopped after too many non-finite losses in a row (a checkpoint is written; --resume latest).
"""

DESCRIPTION = """\
Train one stage of LaVie's cascade on clips manifests (LaVie §3, App. C):
  base    text-to-video key frames; joint image-video batches, loss = L_video + alpha * L_image (Eq. 3)
  interp  temporal interpolation 16 -> 61 frames from a base checkpoint (§3.2)
  vsr     video super-resolution from the SD x4 upscaler, spatial layers frozen (§3.3)

Config: a YAML file (configs/train/<stage>.yaml; tiny CPU presets configs/train/tiny-<stage>.yaml)
plus KEY=VALUE overrides with dotted keys, e.g. train.max_steps=100 data.batch_size=2. Unknown keys
are errors. The resolved config is saved in the run folder and in every checkpoint.

Multi-GPU and multi-node: launch through accelerate or torchrun, e.g.
  accelerate launch --num_processes 8 -m lavie.train.cli --stage base -c configs/train/base.yaml
  accelerate launch --config_file configs/train/accelerate/fsdp.yaml -m lavie.train.cli --stage base -c ...
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_endpoint HOST:29500 -m lavie.train.cli --stage base -c ...
SIGTERM (preemption) writes a checkpoint and exits 0; continue with --resume latest.
"""


def build_parser() -> argparse.ArgumentParser:
    keys = "\n".join(f"  {key} (default {default})\n{textwrap.indent(textwrap.fill(help, 90), '      ')}"
                     for key, default, help in describe_keys())
    p = OneLineParser(prog="lavie-train", description=DESCRIPTION, epilog=EXIT_STATUS + "\nconfig keys:\n" + keys,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, choices=STAGES, help="which model of the cascade to train")
    p.add_argument("-c", "--config", metavar="YAML", help="config file (without it, defaults plus overrides)")
    p.add_argument("--resume", metavar="latest|PATH", help="continue from the run's latest checkpoint or a checkpoint folder")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_steps=100")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # its per-file checkpoint lines drown the run's own
    try:
        config = load_train_config(args.config, args.overrides, stage=args.stage)
        note = preflight(config, args.resume)  # data, model and output folder, before any model is built
    except (ValueError, OSError) as err:
        usage_error("lavie-train", err)
    if note:
        logging.getLogger("lavie.train").info(note)
    from .loop import train  # torch, diffusers and accelerate load only once the arguments are good

    try:
        return train(config, resume=args.resume)
    except FileNotFoundError as err:
        print(f"lavie-train: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
