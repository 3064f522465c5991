"""Compile the bench's C programs (load generator, C epoll reference) once, into a cache.

The binaries are named after a hash of their source and the compiler
command, so an edited ``.c`` file is rebuilt and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = {
    "loadgen": HERE / "loadgen.c",
    "epoll_reply": HERE / "peers" / "epoll_reply.c",
}
CFLAGS = ["-O2", "-Wall", "-Wextra"]


class BuildError(RuntimeError):
    """gcc is missing or a C program did not compile."""


def cache_dir() -> Path:
    """``$CHATLOG_BENCH_CACHE``, else ``$XDG_CACHE_HOME/chatlog-bench`` (``~/.cache``)."""
    explicit = os.environ.get("CHATLOG_BENCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chatlog-bench"


def build(name: str, cc: str | None = None, directory: Path | None = None) -> Path:
    """The path of the compiled program ``name`` (``loadgen`` or ``epoll_reply``)."""
    source = SOURCES[name]
    cc = cc or os.environ.get("CC") or "gcc"
    compiler = shutil.which(cc)
    if compiler is None:
        raise BuildError(f"the bench needs a C compiler: {cc!r} not found (set CC)")
    command = [compiler, *CFLAGS, "-o", "{out}", str(source), "-lm"]
    digest = hashlib.sha256(source.read_bytes() + " ".join(command).encode()).hexdigest()[:12]
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"chatlog-{name}-{digest}"
    if target.exists():
        return target
    fd, scratch = tempfile.mkstemp(dir=directory, prefix=f".{name}-")
    os.close(fd)
    try:
        argv = [part.replace("{out}", scratch) for part in command]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"{' '.join(argv)} failed:\n{done.stderr}")
        os.replace(scratch, target)  # atomic: a concurrent build sees all or nothing
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return target
