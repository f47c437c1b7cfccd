"""Find the source videos under a raw folder, whatever the folder holds.

A raw folder is input from the outside world: link loops, links to a folder above, names that are
not valid UTF-8, paths longer than the system allows, FIFOs, device files and sockets. Discovery
never opens a file to learn what it is (a FIFO would block) and never follows a folder twice, and
every file whose name asks to be read comes back as a `Source`: readable ones for the scenes
stage, the others with the reason they cannot be read (`problem`), which becomes an error row.

Names. A manifest stores paths as UTF-8 text. A file name that is not valid UTF-8 is kept
losslessly: bytes that do not decode appear as `\\xNN` escapes (Python's `backslashreplace`), a
readable form that `fs_path` turns back into the name on disk. The video id hashes the name's
exact bytes, so two names that differ only in such bytes stay two videos.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The longest path the kernel resolves in one call (Linux PATH_MAX, the terminating NUL
# included). Deeper files are still found (discovery walks by folder handles), but no program
# can open them by name, so they become error rows that say so.
PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096

MAX_DEPTH = 512  # folders deep; a handle stays open per level

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its `st_mode`."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def not_regular_reason(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be decoded as a file, without opening it; None for a regular file.

    A FIFO, device or socket is refused here, so no reader ever blocks on opening one.
    """
    try:
        st = os.stat(fs_path(path))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop: the chain of links never reaches a file"
        if exc.errno == errno.ENAMETOOLONG:
            return f"path longer than the system limit of {PATH_MAX} bytes (PATH_MAX); move or rename it"
        return None  # missing or unreadable: the opener says so in its own words
    if stat.S_ISREG(st.st_mode):
        return None
    return f"not a regular file: {file_kind(st.st_mode)}"


def display_path(path: str | os.PathLike) -> str:
    """The manifest's text form of a path: valid UTF-8, undecodable bytes as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def fs_path(text: str | os.PathLike) -> str:
    """The name on disk of a manifest path (the inverse of `display_path`).

    Text that names an existing file is that file; otherwise `\\xNN` escapes become the bytes
    they stand for. Readers call this before opening a path taken from a manifest.
    """
    text = os.fspath(text)
    if isinstance(text, bytes):
        return os.fsdecode(text)
    if "\\x" not in text or os.path.lexists(text):
        return text
    out, last = bytearray(), 0
    for match in _ESCAPE.finditer(text):
        out += text[last:match.start()].encode("utf-8", "surrogateescape")
        out.append(int(match.group(1), 16))
        last = match.end()
    out += text[last:].encode("utf-8", "surrogateescape")
    return os.fsdecode(bytes(out))


def source_video_id(identity: str) -> str:
    """Stable id of a source: its resolved path, byte for byte.

    Size and content are not part of it: a file that changes between runs keeps its id, and
    the run replaces its rows (see `lavie.curate.sources`) instead of adding a second video.
    """
    return hashlib.sha1(os.fsencode(identity)).hexdigest()[:16]


@dataclass(frozen=True)
class Source:
    """One file under the raw folder whose name has a video extension."""

    path: str  # the name on disk (surrogate escapes for undecodable bytes): what to open
    identity: str  # the resolved path (the link's own path when it resolves nowhere)
    problem: str | None = None  # why it cannot be read, known without opening it
    size: int | None = None
    mtime_ns: int | None = None

    @property
    def display(self) -> str:
        return display_path(self.path)

    @property
    def video_id(self) -> str:
        return source_video_id(self.identity)

    @property
    def signature(self) -> str | None:
        """What changes when the file does: size and modification time (as make and rsync)."""
        if self.size is None or self.mtime_ns is None:
            return None
        return f"{self.size}:{self.mtime_ns}"


def _identity(path: str) -> str:
    try:
        return os.path.realpath(path, strict=True)
    except (OSError, RuntimeError, ValueError):
        return os.path.abspath(path)


def _file_source(path: str, entry: os.DirEntry) -> Source:
    nbytes = len(os.fsencode(os.path.abspath(path)))
    if nbytes >= PATH_MAX:
        return Source(path, os.path.abspath(path),
                      f"path is {nbytes} bytes long, over the system limit of {PATH_MAX} (PATH_MAX): "
                      f"no program can open it by name; move or rename it")
    try:
        st = entry.stat(follow_symlinks=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Source(path, os.path.abspath(path),
                          "symbolic link loop: the chain of links never reaches a file")
        if exc.errno == errno.ENOENT:
            return Source(path, os.path.abspath(path), "dangling link: the file it points to does not exist")
        return Source(path, os.path.abspath(path), f"cannot stat file: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        return Source(path, _identity(path), f"not a regular file: {file_kind(st.st_mode)}")
    return Source(path, _identity(path), None, st.st_size, st.st_mtime_ns)


def discover_sources(
    raw_dir: str | os.PathLike, extensions: list[str], skip: list[str | os.PathLike] | None = None
) -> list[Source]:
    """Every file under `raw_dir` with one of `extensions`, sorted by name, hidden ones left out.

    Folders are walked through open handles (so depth and path length are no limit) and each
    real folder once: a link back to a folder already walked (`ln -s . loop`) is passed over
    with a warning. Links to folders elsewhere are followed. `skip` folders (the run's own
    output) are left out.
    """
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    skip_ids = set()
    for folder in skip or []:
        try:
            st = os.stat(folder)
            skip_ids.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    root = os.path.abspath(os.fspath(raw_dir))  # manifests name sources by absolute path
    found: list[Source] = []
    root_st = os.stat(root)
    seen = {(root_st.st_dev, root_st.st_ino)}

    def scan(fd: int, where: str) -> list[tuple[str, str]]:
        """Files of one folder into `found`; its subfolders still to walk, in name order."""
        try:
            with os.scandir(fd) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            log.warning("%s: cannot list folder: %s", display_path(where), exc.strerror or exc)
            return []
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = os.path.join(where, entry.name)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in skip_ids:
                    continue
                if key in seen:
                    log.warning("%s leads to a folder already searched (a link loop?); not followed",
                                display_path(path))
                    continue
                seen.add(key)
                subdirs.append((entry.name, path))
            elif os.path.splitext(entry.name)[1].lower() in exts:
                found.append(_file_source(path, entry))
        return subdirs

    # Depth first, each folder opened relative to its parent's handle: works at any depth and
    # path length, with one open handle per level.
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    stack = [(fd, scan(fd, root))]
    try:
        while stack:
            fd, pending = stack[-1]
            if not pending:
                os.close(fd)
                stack.pop()
                continue
            name, path = pending.pop(0)
            if len(stack) >= MAX_DEPTH:
                log.warning("%s: more than %d folders deep; not searched", display_path(path), MAX_DEPTH)
                continue
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            except OSError as exc:
                log.warning("%s: cannot open folder: %s", display_path(path), exc.strerror or exc)
                continue
            stack.append((child, scan(child, path)))
    finally:
        for fd, _ in stack:
            os.close(fd)
    return sorted(found, key=lambda s: os.fsencode(s.path))


def category_of(source: Source, raw_dir: str | os.PathLike) -> str | None:
    """The top folder under the raw folder (display form), for a tree organised as <category>/<video>."""
    rel = Path(os.path.relpath(source.path, os.fspath(raw_dir)))
    return display_path(rel.parts[0]) if len(rel.parts) > 1 else None


def error_row(source: Source, category: str | None = None) -> dict:
    """The `videos` row of a source that cannot be read: status error, the reason, the run goes on."""
    return {
        "video_id": source.video_id, "source_path": source.display, "size_bytes": source.size,
        "category": category, "num_scenes": None, "num_clips": None,
        "status": "error", "error": source.problem,
    }
