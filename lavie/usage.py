"""Usage errors of the three CLIs: one line each, with the documented exit status.

argparse prints the whole usage block before a usage error; in a log of many runs that block
hides the one line that matters. `OneLineParser` prints `prog: error: message (see prog --help)`
and exits 2, and `usage_error` does the same for errors found after parsing (a missing file, a
bad config key), so every CLI reports a mistake the same way.
"""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


def one_line(text: object) -> str:
    """Any message as one line (tracebacks and YAML marks span several)."""
    return " ".join(str(text).split())


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog.split()[0]} --help)\n")


def usage_error(prog: str, message: object) -> None:
    """Report a usage or configuration error in one line and exit with status 2."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)
