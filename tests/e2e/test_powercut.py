"""End-to-end: power cuts under load, on a filesystem that forgets what was never synced.

The real ``twistd -n chatlog`` logs to a FUSE mount (:mod:`tests.support.powercut_fs`)
that keeps, at a cut, only what the server made durable: each file up to its
last ``fdatasync``, each name once its directory was fsynced.  A cut is
``kill -9`` of the server while several connections send, then the filesystem
drops every unsynced byte; the server is restarted on the surviving file and
the next cut comes.  With ``--fsync`` every acknowledged message must survive
exactly once, in well-formed records; without it the test measures what a cut
takes (the default mode's honest limit: records only in the page cache).

The log is checked as bytes (:mod:`tests.support.logfile`), and with chatlog's
reader only for its verdict on torn lines.  Figures are printed: run with
``-s`` to see them; ``python -m tests.soak powercut`` runs more cuts.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatlog.log import LogReader
from tests.support.logfile import read_records
from tests.support.powercut_fs import PowercutMount, check_log, run_cuts, unavailable
from tests.support.twistd import start_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

#: Cuts per run in the suite (the soak scenario runs more).
CUTS = 20


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowercutMount]:
    """A power-cut filesystem mounted under ``tmp_path``; skipped where FUSE cannot mount."""
    mount = PowercutMount(tmp_path / "backing", tmp_path / "disk")
    try:
        mount.start()
    except (RuntimeError, TimeoutError) as error:
        pytest.skip(f"cannot mount a FUSE filesystem here: {error}")
    try:
        yield mount
    finally:
        mount.close()


def test_fsync_keeps_every_ack_across_power_cuts(disk: PowercutMount, tmp_path: Path) -> None:
    """--fsync, 20 cuts at random moments under load: every ack survives exactly once, well formed.

    Every other cut keeps some unsynced pages too, so the server also
    restarts on a torn last line, which it must mark rather than mend.
    """
    seed = random.randrange(1 << 32)
    run = run_cuts(disk, tmp_path, CUTS, fsync=True, seed=seed, partial=True)
    assert not run.problems, run.problems
    assert len(run.cuts) == CUTS
    assert all(acked > 0 for acked, *_ in run.cuts), run.cuts
    assert run.syncs["fsyncs"] > 0 and run.syncs["overwrites"] == 0, run.syncs

    # A last start on what survived, stopped cleanly: every run left its
    # Server Started (synced before the first ack), nothing between them torn.
    server = start_server(tmp_path, "--fsync", logfile=str(disk.mountpoint / "chatlog.log"))
    assert server.stop() == -signal.SIGTERM
    log_path = disk.backing / "chatlog.log"  # the same file, read beside the mount
    assert not check_log(log_path, run.acked, fsync=True)
    records = read_records(log_path)
    assert sum(r.startswith(b"Server Started: ") for r in records) == CUTS + 1
    assert records[-1].startswith(b"Server Stopped: ")
    # Each torn line a cut left was marked torn once by the restart after it,
    # and the reader counts exactly those apart.
    reader = LogReader(log_path)
    for _event in reader:
        pass
    assert (reader.torn, reader.unparsed) == (run.torn, 0), reader.torn_lines
    dropped = sum(d for *_, d in run.cuts)
    print(
        f"\npowercut --fsync: {CUTS} cuts, {len(run.acked)} acks, none lost; "
        f"{run.syncs['fsyncs']} fdatasyncs ({len(run.acked) / run.syncs['fsyncs']:.1f} acks each), "
        f"{dropped} unsynced bytes dropped by the cuts, {run.torn} torn lines left "
        f"and marked (seed {seed})"
    )


def test_default_mode_loses_what_the_page_cache_held(disk: PowercutMount, tmp_path: Path) -> None:
    """Without --fsync a cut takes every ack the disk had not been made to keep; records stay well formed."""
    seed = random.randrange(1 << 32)
    cuts = 5
    run = run_cuts(disk, tmp_path, cuts, fsync=False, seed=seed)
    # No lost ack is a problem here (that is what is measured), but a record
    # torn into a malformed one, or an ack logged twice, would be.
    assert not run.problems, run.problems
    # The server never syncs data without --fsync; it only makes the log's
    # name durable when it opens it.
    assert run.syncs["fsyncs"] == 0, run.syncs
    assert run.syncs["dirsyncs"] >= cuts, run.syncs
    acked = sum(a for a, *_ in run.cuts)
    lost = sum(lost for _, lost, *_ in run.cuts)
    rate = acked / sum(s for *_, s, _ in run.cuts)
    print(
        f"\npowercut default mode: {cuts} cuts, {lost} of {acked} acks lost "
        f"({[f'{lost}/{a}' for a, lost, *_ in run.cuts]} per cut), "
        f"at ~{rate:.0f} acks/s on the FUSE disk (seed {seed})"
    )
