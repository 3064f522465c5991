"""A FUSE filesystem that forgets at a simulated power cut whatever was never made durable.

It passes every operation through to a backing directory at once, so programs
on the mount see their writes as they would in the page cache, and it keeps
the model of what a disk would still hold after a power cut:

- a file's data is durable up to its *synced length*: the length the file had
  at its last ``fsync`` or ``fdatasync``;
- a name (a file or directory created on the mount) is durable once its
  directory was fsynced after it was created: ``fsync`` of the file keeps
  its data, not the directory entry that finds it;
- what the backing directory holds when the filesystem is mounted is durable.

A *cut* (:meth:`PowercutMount.cut`, once the programs writing there are
killed) truncates every file back to its synced length and removes every
name that was never made durable, then answers what it dropped.  A *partial*
cut keeps a random part of each unsynced tail instead, as if the kernel had
written that much back: a torn last line, as a real power cut may leave.
The model is one of appends and creations, which is what a log does: a write
inside the synced part of a file is kept at a cut (counted as
``overwrites``), and removals and renames are durable at once.

The filesystem runs in its own process (``python -m tests.support.powercut_fs
BACKING MOUNTPOINT``), on ``mfusepy`` and the system's libfuse, with no
caching in the kernel (``direct_io``, no attribute or entry timeouts), so
every write and every sync reaches it.  It says ``{"mounted": true}`` on
stdout once the mount serves, then takes one command per line on stdin
(``cut``, ``cut partial SEED``, ``stats``) and answers each with one JSON
line; at the end of its stdin it unmounts and exits.

:class:`PowercutMount` runs it for a test, and :func:`run_cuts` is the
power-cut loop the tests and the soak run share.
"""

from __future__ import annotations

import errno
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


def _import_mfusepy() -> Any:
    """The binding, or ImportError/OSError when it or libfuse is missing."""
    import mfusepy

    return mfusepy


class _Model:
    """What is durable: synced lengths of files, names not yet made durable."""

    def __init__(self) -> None:
        self.synced: dict[str, int] = {}  # path on the mount -> durable length
        self.undurable: set[str] = set()  # names created since their directory's last fsync
        self.overwrites = 0
        self.fsyncs = 0
        self.dirsyncs = 0

    def summary(self) -> dict[str, Any]:
        return {
            "synced": dict(sorted(self.synced.items())),
            "undurable": sorted(self.undurable),
            "overwrites": self.overwrites,
            "fsyncs": self.fsyncs,
            "dirsyncs": self.dirsyncs,
        }


def _parent(path: str) -> str:
    return os.path.dirname(path) or "/"


def make_operations(backing: str) -> Any:
    """The FUSE operations over ``backing`` (built here: the base class comes from mfusepy)."""
    mfusepy = _import_mfusepy()

    class PowercutOperations(mfusepy.Operations):  # type: ignore[misc,name-defined]
        """Pass-through to ``backing``, keeping :class:`_Model` up to date under one lock."""

        use_ns = True

        def __init__(self) -> None:
            self.root = backing
            # Not "lock": every attribute named like a FUSE operation is taken for one.
            self._mutex = threading.Lock()
            self.model = _Model()
            self.append: dict[int, bool] = {}  # file handle -> opened with O_APPEND
            self.mounted = threading.Event()

        def _real(self, path: str) -> str:
            return os.path.join(self.root, path.lstrip("/"))

        # -- the mount ----------------------------------------------------------

        def init(self, path: str) -> None:
            self.mounted.set()

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(self._real(path))
            return {key: getattr(st, key) for key in dir(st) if key.startswith("f_")}

        # -- names --------------------------------------------------------------

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.lstat(self._real(path))
            attrs = {
                key: getattr(st, key)
                for key in ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size")
            }
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._real(path))]

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._real(path), amode):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            with self._mutex:
                os.mkdir(self._real(path), mode)
                self.model.undurable.add(path)
            return 0

        def rmdir(self, path: str) -> int:
            with self._mutex:
                os.rmdir(self._real(path))
                self.model.undurable.discard(path)
            return 0

        def unlink(self, path: str) -> int:
            with self._mutex:
                os.unlink(self._real(path))
                self.model.undurable.discard(path)
                self.model.synced.pop(path, None)
            return 0

        def rename(self, old: str, new: str) -> int:
            with self._mutex:
                os.rename(self._real(old), self._real(new))
                model = self.model
                if old in model.synced:
                    model.synced[new] = model.synced.pop(old)
                if old in model.undurable:
                    model.undurable.discard(old)
                    model.undurable.add(new)
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._real(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            os.utime(self._real(path), ns=times)
            return 0

        # -- files --------------------------------------------------------------

        def _opened(self, fd: int, flags: int) -> int:
            self.append[fd] = bool(flags & os.O_APPEND)
            return fd

        def create(self, path: str, mode: int, flags: int) -> int:
            with self._mutex:
                real = self._real(path)
                existed = os.path.lexists(real)
                fd = os.open(real, flags | os.O_CREAT, mode)
                if not existed:
                    self.model.undurable.add(path)
                    self.model.synced[path] = 0
                return self._opened(fd, flags)

        def open(self, path: str, flags: int) -> int:
            with self._mutex:
                fd = os.open(self._real(path), flags & ~(os.O_CREAT | os.O_EXCL))
                # A file here since the mount is durable as it is; O_TRUNC
                # cuts into what was durable.
                size = os.fstat(fd).st_size
                self.model.synced[path] = min(self.model.synced.get(path, size), size)
                return self._opened(fd, flags)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with self._mutex:
                if self.append.get(fh):
                    # Appends land at the backing file's end, whatever size
                    # the kernel believes the file has.
                    return os.write(fh, data)
                if offset < self.model.synced.get(path, 0):
                    self.model.overwrites += 1
                return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            with self._mutex:
                if fh is not None:
                    os.ftruncate(fh, length)
                else:
                    os.truncate(self._real(path), length)
                # Cutting into the durable part: what is cut is gone either way.
                if path in self.model.synced:
                    self.model.synced[path] = min(self.model.synced[path], length)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            with self._mutex:
                self.model.synced[path] = os.fstat(fh).st_size
                self.model.fsyncs += 1
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            with self._mutex:
                # Every name created in this directory since is durable now.
                made = {name for name in self.model.undurable if _parent(name) == path}
                self.model.undurable -= made
                self.model.dirsyncs += 1
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            with self._mutex:
                self.append.pop(fh, None)
                os.close(fh)
            return 0

        # -- the power cut ------------------------------------------------------

        def cut(self, partial: random.Random | None = None) -> dict[str, Any]:
            """Drop every unsynced byte and every name never made durable.

            With ``partial``, each file keeps a random part of its unsynced
            tail instead (the kernel had written that much back): what a real
            power cut may leave, a torn last line included.  (A disk keeps
            whole pages; records do not end on page boundaries, so those end
            mid-record just as well.)
            """
            with self._mutex:
                model = self.model
                dropped: dict[str, int] = {}
                removed: list[str] = []
                # Deepest first, so a directory is emptied before it goes.
                for name in sorted(model.undurable, key=lambda n: n.count("/"), reverse=True):
                    real = self._real(name)
                    if os.path.isdir(real) and not os.path.islink(real):
                        shutil.rmtree(real)
                    elif os.path.lexists(real):
                        os.unlink(real)
                    removed.append(name)
                    for path in [p for p in model.synced if p == name or p.startswith(name + "/")]:
                        del model.synced[path]
                model.undurable.clear()
                for path, length in model.synced.items():
                    real = self._real(path)
                    size = os.path.getsize(real)
                    if size <= length:
                        continue
                    keep = length
                    if partial is not None:
                        keep = partial.randint(length, size)
                    if size > keep:
                        os.truncate(real, keep)
                        dropped[path] = size - keep
                    model.synced[path] = keep
                return {"dropped": dropped, "removed": removed, **model.summary()}

        def stats(self) -> dict[str, Any]:
            with self._mutex:
                return self.model.summary()

    return PowercutOperations()


def _unmount(mountpoint: str) -> None:
    """Unmount, lazily: a process may still hold a file open there."""
    for cmd in (["fusermount3", "-u", "-z", mountpoint], ["fusermount", "-u", "-z", mountpoint]):
        if shutil.which(cmd[0]) and subprocess.run(cmd, capture_output=True).returncode == 0:
            return
    subprocess.run(["umount", "-l", mountpoint], capture_output=True)


def _serve_commands(ops: Any, mountpoint: str, out: IO[str]) -> None:
    """Answer the commands on stdin; unmount at its end (the test is done, or died)."""
    if not ops.mounted.wait(30):
        return
    print(json.dumps({"mounted": True}), file=out, flush=True)
    for line in sys.stdin:
        command = line.strip()
        try:
            if command == "cut":
                answer = ops.cut()
            elif command.startswith("cut partial "):
                answer = ops.cut(random.Random(int(command.split()[2])))
            elif command == "stats":
                answer = ops.stats()
            else:
                answer = {"error": f"unknown command {command!r}"}
        except (OSError, ValueError) as error:  # answered: the test fails saying why
            answer = {"error": f"{command!r} failed: {error}"}
        print(json.dumps(answer), file=out, flush=True)
    _unmount(mountpoint)


def main(argv: list[str]) -> int:
    backing, mountpoint = argv
    mfusepy = _import_mfusepy()
    ops = make_operations(os.path.abspath(backing))
    # stdout is the command channel: keep libfuse's and Python's chatter off it.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    threading.Thread(target=_serve_commands, args=(ops, mountpoint, out), daemon=True).start()
    mfusepy.FUSE(
        ops,
        mountpoint,
        foreground=True,
        nothreads=True,
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        fsname="powercut",
    )
    return 0


# -- the test side ----------------------------------------------------------------


def unavailable() -> str | None:
    """Why this filesystem cannot be mounted here (no /dev/fuse, no libfuse, no binding), or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    try:
        _import_mfusepy()
    except (ImportError, OSError) as error:
        return f"cannot load mfusepy over libfuse ({error}); .ci/system-deps installs libfuse"
    return None


class PowercutMount:
    """The filesystem in its own process, mounted at ``mountpoint`` over ``backing``."""

    def __init__(self, backing: Path, mountpoint: Path) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.proc: subprocess.Popen[str] | None = None
        self.messages = backing.with_name(backing.name + ".fs.log")

    def start(self, timeout: float = 30.0) -> None:
        """Mount and wait until the mount serves; RuntimeError (with why) if it cannot."""
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        # libfuse's and the binding's messages go to a file: a pipe nobody
        # reads would fill up and stop the filesystem, and every process on it.
        with open(self.messages, "wb") as messages:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.powercut_fs",
                 str(self.backing), str(self.mountpoint)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=messages,
                text=True,
                env=env,
            )  # fmt: skip
        try:
            answer = self._answer(timeout)
        except (RuntimeError, TimeoutError):
            self.close()
            raise
        if answer != {"mounted": True}:
            self.close()
            raise RuntimeError(f"powercut filesystem did not mount: {answer!r}")

    def _answer(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"powercut filesystem did not answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            said = self.messages.read_text(errors="replace").strip()[-500:]
            raise RuntimeError(f"powercut filesystem exited ({self.proc.returncode}): {said}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _ask(self, command: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self._answer(timeout)
        if "error" in answer:
            raise RuntimeError(f"powercut filesystem: {answer['error']}")
        return answer

    def cut(self, partial_seed: int | None = None) -> dict[str, Any]:
        """The power cut: drop what was never made durable; what was dropped, per file.

        With ``partial_seed``, keep a random part of each file's unsynced
        tail (seeded, so a run can be repeated).  Call it once every
        process writing on the mount is dead (SIGKILL, and waited for): then
        nothing is in flight.
        """
        return self._ask("cut" if partial_seed is None else f"cut partial {partial_seed}")

    def stats(self) -> dict[str, Any]:
        """Synced lengths, names not yet durable, and how many syncs were seen."""
        return self._ask("stats")

    def close(self, timeout: float = 15.0) -> None:
        """Unmount (the filesystem process does it at the end of its stdin) and wait for it."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.stdin is not None:
            proc.stdin.close()
        deadline = time.monotonic() + timeout
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _unmount(str(self.mountpoint))
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> PowercutMount:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- power cuts under load -----------------------------------------------------------
# (Imported inside the functions: the filesystem's own process needs none of it.)


@dataclass
class CutRun:
    """What a series of cuts did: every ack, and per cut what the cut took."""

    seed: int
    acked: list[bytes] = field(default_factory=list)
    #: Per cut: (messages acknowledged in that run, of those missing after the cut,
    #: seconds the run served, bytes the cut dropped).
    cuts: list[tuple[int, int, float, int]] = field(default_factory=list)
    #: Cuts that left the log ending in a torn line.
    torn: int = 0
    #: Problems found after a cut, in words (empty when all held).
    problems: list[str] = field(default_factory=list)
    syncs: dict[str, Any] = field(default_factory=dict)


def check_log(log_path: Path, acked: list[bytes], fsync: bool, whole: bool = True) -> list[str]:
    """What is wrong with the surviving log: lost or doubled acks, records that are no record.

    A torn line is no record, and no problem, if it is the last line or
    marked torn (the reader counts both apart); any other line that is no
    record is.  ``whole``: the last cut kept only what was synced, so with
    ``fsync`` the file must end on a whole line.
    """
    from chatlog.log import LogReader
    from tests.support.logfile import logged_messages

    if not log_path.exists():
        if acked:
            return [
                f"the log is gone with its {len(acked)} acknowledged messages: its name was "
                "never made durable (no fsync of its directory after it was created)"
            ]
        return []
    problems = []
    counts = logged_messages(log_path)
    if fsync:
        missing = [m for m in acked if counts[m] == 0]
        if missing:
            problems.append(f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]!r}")
    doubled = [m for m in acked if counts[m] > 1]
    if doubled:
        problems.append(f"{len(doubled)} acknowledged messages logged twice: {doubled[:3]!r}")
    reader = LogReader(log_path)
    for _event in reader:
        pass
    if reader.unparsed:
        problems.append(f"{reader.unparsed} malformed records, e.g. {reader.examples[:2]!r}")
    if fsync and whole and not log_path.read_bytes().endswith(b"\n"):
        # Every fdatasync covers whole batches: the synced part ends on a newline.
        problems.append("what --fsync made durable ends in a torn line")
    return problems


def run_cuts(
    disk: PowercutMount, workdir: Path, cuts: int, fsync: bool, seed: int, partial: bool = False
) -> CutRun:
    """``cuts`` times: start the server on the disk's log, load it, kill -9 at a random ack, cut.

    With ``partial`` every other cut is partial (keeps part of the unsynced tail).
    """
    from tests.support.load import Load
    from tests.support.logfile import logged_messages
    from tests.support.twistd import start_server

    rng = random.Random(seed)
    run = CutRun(seed)
    log_path = disk.mountpoint / "chatlog.log"
    # Checked where the filesystem keeps it: this process never touches the
    # mount, so a filesystem that stopped answering could only stop the server.
    surviving = disk.backing / "chatlog.log"
    options = ["--fsync"] if fsync else []
    for n in range(cuts):
        server = start_server(workdir, *options, logfile=str(log_path))
        try:
            started = time.monotonic()
            load = Load(server.address, connections=4, pipeline=8, tag=f"cut{n}", size=8)
            load.start()
            # The random moment: the kill lands after a random number of acks,
            # somewhere in the server's cycle of reads, writes, syncs and replies.
            load.wait_acked(rng.randint(1, 1500), timeout=30)
        finally:
            server.stop(signal.SIGKILL)
        served = time.monotonic() - started
        load.finish()
        this_run = list(load.acked)
        run.acked += this_run
        whole = not (partial and n % 2)
        cut = disk.cut(None if whole else rng.randrange(1 << 32))
        counts = logged_messages(surviving)
        lost = sum(1 for m in this_run if counts[m] == 0)
        data = surviving.read_bytes() if surviving.exists() else b""
        run.torn += data[-1:] not in (b"", b"\n")
        run.cuts.append((len(this_run), lost, served, sum(cut["dropped"].values())))
        for problem in check_log(surviving, run.acked, fsync, whole):
            run.problems.append(f"cut {n + 1} (seed {seed}): {problem}")
        if run.problems:
            break
    run.syncs = disk.stats()
    return run


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
