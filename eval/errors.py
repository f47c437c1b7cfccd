"""The errors `lavie-eval` reports to its user in one line, each with its exit status."""


class InputError(ValueError):
    """A missing or malformed input (a prompt file, a video set, a model or feature-extractor file,
    an argument): exit status 2, reported before any model is loaded."""


class TooFewVideos(RuntimeError):
    """A set has too few readable videos for the statistic asked for: exit status 3."""
