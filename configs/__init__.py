"""Default configs and model presets, shipped inside the package as `lavie.configs` (package data).

`curate.yaml`, `train/<stage>.yaml` (+ `train/tiny-<stage>.yaml`, `train/accelerate/`) and
`model/tiny-<stage>.yaml` are read through `importlib.resources`, so a wheel install finds them
from any working directory; in a checkout this folder is the same files, edited in place.
"""

from importlib import resources
from pathlib import Path


def config_file(*parts: str) -> Path:
    """A packaged config, e.g. `config_file("train", "tiny-base.yaml")`."""
    path = resources.files(__name__).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"no packaged config {'/'.join(parts)}")
    return Path(str(path))
