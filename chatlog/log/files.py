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
- :func:`write_all` hands a batch of records to the kernel, looping on
  short writes, without first copying them into one buffer;
- :class:`PageRecycler` keeps the file's share of the page cache small, so
  that writing goes on into memory already in use;
- :func:`ends_mid_line` tells whether the file ends in a torn line;
- :func:`cut_back` removes the bytes a failed batch left at the end.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

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


#: The most buffers one ``writev(2)`` takes (IOV_MAX: 1024 on Linux).
IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16
#: Records at least this big on average are written where they lie (writev);
#: smaller ones are first joined into one buffer, which costs less than the
#: kernel's and Python's work per buffer (measured: 100 records of 76 bytes,
#: 3.2 us joined and written, 6.6 us with writev).
WRITEV_PIECE = 4096
#: A batch this big is never joined: a buffer of megabytes would be fresh
#: memory to fault in, then freed, on every flush.
WRITEV_BATCH = 1 << 20


class WriteFailed(Exception):
    """A write failed (``error``) after ``written`` bytes of the batch reached the file."""

    def __init__(self, error: OSError, written: int) -> None:
        super().__init__(error, written)
        self.error = error
        self.written = written


def write_all(fd: int, pieces: list[bytes], total: int) -> None:
    """Write ``pieces`` (``total`` bytes in all) in order to ``fd``, looping on short writes.

    Small records are joined into one ``write(2)``; big ones go by
    ``writev(2)`` straight from where they are, so a batch of megabytes is
    never copied into one buffer first: up to :data:`IOV_MAX` records per
    call.  Raises :class:`WriteFailed`, saying how much was written, when a
    system call fails.
    """
    written = 0
    try:
        if len(pieces) == 1 or (total < WRITEV_PIECE * len(pieces) and total < WRITEV_BATCH):
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            view = memoryview(data)
            while written < total:
                written += _took(os.write(fd, view[written:]))
            return
        if len(pieces) <= IOV_MAX:
            written = _took(os.writev(fd, pieces))
            if written == total:
                return
        index = 0  # the first piece not yet wholly written
        done = written  # bytes written of pieces[index:]
        while written < total:
            while done >= len(pieces[index]):
                done -= len(pieces[index])
                index += 1
            group: list[bytes | memoryview] = list(pieces[index : index + IOV_MAX])
            if done:
                group[0] = memoryview(pieces[index])[done:]
            took = _took(os.writev(fd, group))
            written += took
            done += took
    except OSError as error:
        raise WriteFailed(error, written) from error


def _took(count: int) -> int:
    if count <= 0:
        # A regular file takes at least a byte or fails; never spin on it.
        raise OSError(errno.EIO, "the log took no bytes")
    return count


class PageRecycler:
    """Every ``every`` bytes written, drop the log's pages that are on disk; send the rest there.

    An append-only log left to the kernel grows the page cache by every byte
    written, each in a page of memory never used before, until writeback
    catches up (dirty pages expire after 30 s, or a share of memory is
    dirty and writers are throttled).  Memory never used before is the
    expensive kind: on a virtual machine whose host takes back free memory
    each such page is a fault to the host (measured on the bench's machine:
    writing a growing 3 GB file cost 0.9-1.1 ns of CPU per byte, against
    0.32 ns, writeback included, dropping the pages every 64 MB).  So, like
    a database's incremental writeback of its journal, the writer asks
    ``posix_fadvise(DONTNEED)`` at each step: it drops the pages written
    back since the last step and starts writing back the newer ones, and
    new records go into the freed memory.  The log's share of the cache
    stays near two steps.

    It is advice only: no record depends on it.  ``run`` runs the call
    elsewhere (a thread: starting writeback takes milliseconds that the
    reactor would otherwise stall for); None runs it at once.
    """

    def __init__(
        self, every: int, run: Callable[[Callable[[int], None], int], object] | None = None
    ) -> None:
        self.every = every
        self._run = run
        self._since = 0
        #: A call is under way (in a thread): the next step waits for it.
        self.busy = False
        #: Steps taken, for tests and curiosity.
        self.steps = 0

    def wrote(self, fd: int, count: int) -> None:
        """``count`` bytes were written to ``fd``: take a step when ``every`` have been."""
        self._since += count
        if self._since < self.every or self.busy:
            return
        try:
            # Its own descriptor: the log may be reopened or closed meanwhile.
            mine = os.dup(fd)
        except OSError:
            return
        self._since = 0
        self.busy = True
        self.steps += 1
        if self._run is None:
            self._drop(mine)
        else:
            self._run(self._drop, mine)

    def _drop(self, fd: int) -> None:
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # advice: a file system that cannot take it loses nothing
        finally:
            os.close(fd)
            self.busy = False


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
