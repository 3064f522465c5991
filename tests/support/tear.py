"""kill -9 a server in the middle of a log write: a torn last record, made by the kernel.

A SIGKILL that arrives while ``write(2)`` copies a large batch into a file
stops the copy at a page boundary: the file keeps the batch's first pages,
the call never returns, and none of the batch's replies is sent.  A kill at a
random moment lands there only now and then (about 1 in 10 under load on the
test machine), so :func:`kill_mid_write` makes it land there every time,
from outside, with ptrace: it stops the server at the entry of its next
``write(2)`` or ``writev(2)`` to the log of more than a page, lowers the
call's byte count (for writev, the iovec array's) to a page boundary that
falls inside a record (what the kill between two pages leaves), lets the
kernel carry the call out, and sends SIGKILL at its exit.
What is on disk is the server's own batch as the kernel wrote it; nothing is
appended by the test.

x86-64 Linux only (the registers are read and written as that ABI lays them
out); :func:`available` says whether it can run here.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.syscalls import fd_of

_PTRACE_GETREGS = 12
_PTRACE_SETREGS = 13
_PTRACE_SYSCALL = 24
_PTRACE_SEIZE = 0x4206
_PTRACE_INTERRUPT = 0x4207
_PTRACE_O_TRACESYSGOOD = 0x1
_PTRACE_O_EXITKILL = 0x100000
_WALL = 0x40000000
_SYS_WRITE = 1  # x86-64
_SYS_WRITEV = 20
_IOVEC = struct.Struct("<QQ")  # struct iovec: base, length
_ENOSYS = 38


class _Regs(ctypes.Structure):
    """``struct user_regs_struct`` of x86-64."""

    _fields_ = [
        (name, ctypes.c_ulonglong)
        for name in [
            "r15",
            "r14",
            "r13",
            "r12",
            "rbp",
            "rbx",
            "r11",
            "r10",
            "r9",
            "r8",
            "rax",
            "rcx",
            "rdx",
            "rsi",
            "rdi",
            "orig_rax",
            "rip",
            "cs",
            "eflags",
            "rsp",
            "ss",
            "fs_base",
            "gs_base",
            "ds",
            "es",
            "fs",
            "gs",
        ]
    ]


@dataclass(frozen=True)
class Tear:
    """What the interrupted write was: its size, and how much of it reached the file."""

    offset: int  # the file's size when the write began
    count: int  # bytes the server asked to write
    written: int  # bytes the kernel wrote before the kill


def available() -> bool:
    return platform.system() == "Linux" and platform.machine() == "x86_64"


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    return libc


def _ptrace(libc: ctypes.CDLL, request: int, pid: int, addr: int = 0, data: object = 0) -> None:
    pointer = ctypes.addressof(data) if isinstance(data, ctypes.Structure) else data
    if libc.ptrace(request, pid, addr, pointer) == -1:
        error = ctypes.get_errno()
        raise OSError(error, f"ptrace({request}) on {pid}: {os.strerror(error)}")


def _cut(pid: int, pieces: list[tuple[int, int]], offset: int) -> int | None:
    """A length up to a page boundary of the file that ends strictly inside a record.

    ``pieces`` are the (address, length) buffers the call writes, in order.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    count = sum(length for _, length in pieces)
    cut = page - offset % page
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:

        def byte_at(position: int) -> bytes:
            for address, length in pieces:
                if position < length:
                    memory.seek(address + position)
                    return memory.read(1)
                position -= length
            raise IndexError(position)

        while cut < count - 1:
            # The last byte kept and the first one lost: neither may end a record.
            if b"\n" not in byte_at(cut - 1) + byte_at(cut):
                return cut
            cut += page
    return None


def _shorten(pid: int, regs: _Regs, offset: int) -> tuple[int, bool]:
    """Make the write(2) or writev(2) in ``regs`` stop at a cut inside a record.

    Returns (the bytes the call asked for, whether a cut was made).  For
    writev the iovec array in the server's memory is shortened in place.
    """
    if regs.orig_rax == _SYS_WRITE:
        count = regs.rdx
        cut = _cut(pid, [(regs.rsi, count)], offset)
        if cut is not None:
            regs.rdx = cut
        return count, cut is not None
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as memory:
        memory.seek(regs.rsi)
        raw = memory.read(_IOVEC.size * regs.rdx)
        pieces = [_IOVEC.unpack_from(raw, i * _IOVEC.size) for i in range(regs.rdx)]
        count = sum(length for _, length in pieces)
        cut = _cut(pid, pieces, offset)
        if cut is None:
            return count, False
        start = 0
        for index, (address, length) in enumerate(pieces):
            if cut <= start + length:
                memory.seek(regs.rsi + index * _IOVEC.size)
                memory.write(_IOVEC.pack(address, cut - start))
                regs.rdx = index + 1
                return count, True
            start += length
    raise AssertionError("a cut past the end of the call's buffers")


def kill_mid_write(pid: int, log_path: Path, timeout: float = 20.0) -> Tear:
    """SIGKILL ``pid`` inside its next multi-page ``write(2)`` to ``log_path``, part written.

    ``pid`` must be a child of this process (a server a test started), busy
    enough to write such a batch before ``timeout``.
    """
    libc = _libc()
    log_fd = fd_of(pid, log_path)
    _ptrace(libc, _PTRACE_SEIZE, pid, 0, _PTRACE_O_TRACESYSGOOD | _PTRACE_O_EXITKILL)
    _ptrace(libc, _PTRACE_INTERRUPT, pid)
    deadline = time.monotonic() + timeout
    regs = _Regs()
    try:
        while True:
            _, status = os.waitpid(pid, _WALL)
            if not os.WIFSTOPPED(status):
                raise AssertionError(f"the server ended before a large log write ({status:#x})")
            stop = os.WSTOPSIG(status)
            if stop == signal.SIGTRAP | 0x80:  # a system call's entry or exit
                _ptrace(libc, _PTRACE_GETREGS, pid, 0, regs)
                entering = regs.rax == 2**64 - _ENOSYS
                if entering and regs.orig_rax in (_SYS_WRITE, _SYS_WRITEV) and regs.rdi == log_fd:
                    offset = log_path.stat().st_size
                    count, shortened = _shorten(pid, regs, offset)
                    if shortened:
                        _ptrace(libc, _PTRACE_SETREGS, pid, 0, regs)
                        _ptrace(libc, _PTRACE_SYSCALL, pid)
                        _, status = os.waitpid(pid, _WALL)
                        assert os.WIFSTOPPED(status), f"{status:#x}"
                        _ptrace(libc, _PTRACE_GETREGS, pid, 0, regs)
                        os.kill(pid, signal.SIGKILL)
                        return Tear(offset, count, ctypes.c_longlong(regs.rax).value)
                signal_in = 0
            elif status >> 16:  # the PTRACE_INTERRUPT stop, or a group stop
                signal_in = 0
            else:  # a signal on its way to the server: let it through
                signal_in = stop
            if time.monotonic() > deadline:
                raise AssertionError(f"no multi-page log write within {timeout} s")
            _ptrace(libc, _PTRACE_SYSCALL, pid, 0, signal_in)
    except BaseException:
        # Whatever failed, the server must not stay stopped under a tracer.
        os.kill(pid, signal.SIGKILL)
        raise
