"""The log file's system calls: open it for appending, make it durable, find and cut its tail.

:class:`~chatlog.log.writer.LogWriter` decides what to write and when; this
module is how it touches the file, and where the rules about which files can
be a log are kept:

- :func:`open_log_file` opens the path with ``O_APPEND`` and refuses what
  cannot be a log: a FIFO, a socket or a terminal cannot be seeked, so a
  record that was written there and then refused could never be taken back;
- :func:`sync_directory` makes the file's name durable: ``fdatasync`` on the
  file keeps its data, not the directory entry that finds it, so without
  this a log created just before a power cut could vanish with every record
  that was acknowledged in it;
- :func:`ends_mid_line` tells whether the file ends in a torn line;
- :func:`cut_back` removes the bytes a failed batch left at the end.
"""

from __future__ import annotations

import errno
import os
import stat

# Read-write only so that the last byte can be read back (pread) to see a
# torn line; every write still lands at the end (O_APPEND).  O_NONBLOCK keeps
# a FIFO with no reader from blocking the open: the FIFO is refused anyway.
_FLAGS = os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK

_NOT_A_LOG = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


class NotALogFile(OSError):
    """The path names something a log cannot be written to safely (a FIFO, a socket, a terminal)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            errno.ESPIPE,
            f"{what} cannot be the log: what a failed write left there could not be "
            "taken back; log to a file, or to standard output with --logfile -",
        )


def open_log_file(path: str) -> tuple[int, bool]:
    """Open ``path`` for appending (created 0644, less the umask).

    Returns the descriptor and whether it could be opened for reading too
    (then :func:`ends_mid_line` can look at its end).  Raises
    :class:`NotALogFile` for a FIFO, a socket or any file that cannot be
    seeked, and :class:`OSError` when the open fails.
    """
    try:
        kind = stat.S_IFMT(os.stat(path).st_mode)
    except FileNotFoundError:
        kind = stat.S_IFREG
    if kind in _NOT_A_LOG:
        # A socket cannot be opened at all; say what it is rather than ENXIO.
        raise NotALogFile(_NOT_A_LOG[kind])
    readable = True
    try:
        fd = os.open(path, os.O_RDWR | _FLAGS, 0o644)
    except PermissionError:
        readable = False
        fd = os.open(path, os.O_WRONLY | _FLAGS, 0o644)
    try:
        what = _NOT_A_LOG.get(stat.S_IFMT(os.fstat(fd).st_mode))
        if what is not None:  # it became one between the stat and the open
            raise NotALogFile(what)
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError as error:
            if error.errno != errno.ESPIPE:
                raise
            raise NotALogFile("a file that cannot be seeked (a terminal?)") from None
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, readable


def is_regular(fd: int) -> bool:
    """Whether ``fd`` is a regular file (not ``/dev/full``, standard output on a pipe...)."""
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def sync_directory(path: str) -> None:
    """``fsync`` the directory holding ``path``, so that its entry survives a power cut."""
    directory = os.path.dirname(os.path.abspath(path))
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ends_mid_line(fd: int) -> bool:
    """True if the file is non-empty and its last byte is not ``\\n`` (a torn line).

    ``fd`` must be readable.  A file that cannot be read this way
    (``/dev/full``) has nothing to mend: False.
    """
    try:
        size = os.fstat(fd).st_size
        return size > 0 and os.pread(fd, 1, size - 1) not in (b"\n", b"")
    except OSError:
        return False


def cut_back(fd: int, count: int) -> None:
    """Remove the last ``count`` bytes of the file.

    The writer is the only one appending to its file, so the bytes a failed
    batch got out are the last ``count``.  Raises :class:`OSError` when the
    file cannot be cut (EIO, a device).
    """
    end = os.lseek(fd, 0, os.SEEK_END)
    os.ftruncate(fd, end - count)
