"""kill -9 a server in the middle of a log write: a torn last record, made by the kernel.

A SIGKILL that arrives while ``write(2)`` copies a large batch into a file
stops the copy at a page boundary: the file keeps the batch's first pages,
the call never returns, and none of the batch's replies is sent.  A kill at a
random moment lands there only now and then (about 1 in 10 under load on the
test machine), so :func:`kill_mid_write` makes it land there every time,
from outside, with ptrace: it stops the server at the entry of its next
``write(2)`` to the log of more than a page, lowers the call's byte count to
a page boundary that falls inside a record (what the kill between two pages
leaves), lets the kernel carry the call out, and sends SIGKILL at its exit.
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


def _cut(pid: int, buffer: int, offset: int, count: int) -> int | None:
    """A length up to a page boundary of the file that ends strictly inside a record."""
    page = os.sysconf("SC_PAGE_SIZE")
    cut = page - offset % page
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        while cut < count - 1:
            memory.seek(buffer + cut - 1)
            around = memory.read(2)  # the last byte kept and the first one lost
            if b"\n" not in around:
                return cut
            cut += page
    return None


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
                if entering and regs.orig_rax == _SYS_WRITE and regs.rdi == log_fd:
                    offset, count = log_path.stat().st_size, regs.rdx
                    cut = _cut(pid, regs.rsi, offset, count)
                    if cut is not None:
                        regs.rdx = cut
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
