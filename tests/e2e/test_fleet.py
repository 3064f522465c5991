"""End-to-end: a fleet of chatlog nodes behind HAProxy, their logs gathered by rsyslog over RELP.

Three ``twistd -n chatlog --format json`` nodes on loopback, HAProxy in front
(``contrib/fleet/haproxy.cfg``: leastconn, PROXY v2, a chatlog conversation
as health check), an rsyslog per node following its log
(``contrib/fleet/rsyslog-node.conf``) and forwarding by RELP to a central
rsyslog (``contrib/fleet/rsyslog-collector.conf``): all real programs, started
and stopped by the test (:mod:`tests.support.fleet`).  Under load from
``python -m chatlog.client`` through HAProxy a node is killed (or hung) and
another's log rotated; then every acknowledged message must be in exactly one
node's log, every node must have logged its clients' own addresses, and the
collector must hold every record of every node, byte for byte.

Every wait is for an event (a log line, a count, HAProxy's state) with a
deadline.  The load is open loop at a modest rate: this machine is shared.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatlog.log import LogReader, Parsed
from chatlog.report.cli import main as report_main
from tests.support.clients import REPLY, LineClient
from tests.support.fleet import (
    CheckTiming,
    Fleet,
    Node,
    complete_records,
    finish,
    missing_programs,
    start_fleet,
)
from tests.support.process import process_gone
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

NAMES = ["node1", "node2", "node3"]
#: Both client runs number their messages c<conn>-s<seq>- from 1: their sizes
#: tell them apart (a message is its id padded with x to the size).
SIZE_1, SIZE_2 = 24, 40
#: Their messages' text: --size counts the newline.
TEXT_1, TEXT_2 = SIZE_1 - 1, SIZE_2 - 1
LOAD_MESSAGE = re.compile(rb"^c\d+-s\d+-x*$")
#: The line of HAProxy's health check (contrib/fleet/haproxy.cfg).
CHECK = b"haproxy-check"
#: Lines whose records test rsyslog's limits: the longest (--max-line bytes
#: that JSON writes as \u0001 each, 384 KiB) and escaping (not UTF-8, DEL, quotes).
LONG_LINES = [b"\x01" * (65536 - 1), b'\xff\xfe "q" \\ \x7f caf\xc3\xa9 \xe2\x80\xa8']
#: Slack on top of HAProxy's own check timing, for a loaded 2-core machine.
SLACK = 0.5


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """The fleet of :func:`start_fleet` under ``tmp_path``; every process stopped after the test."""
    reason = missing_programs()
    if reason is not None:
        pytest.skip(reason)
    fleets: list[Fleet] = []
    try:
        yield start_fleet(tmp_path, NAMES, fleets.append)
    finally:
        for started in fleets:
            started.stop()


# --------------------------------------------------------------------------
# Reading the logs (chatlog.log.LogReader)
# --------------------------------------------------------------------------


def acknowledged(logfile: Path) -> list[bytes]:
    """The messages a client run got their reply for, from its own log."""
    return [
        event["msg"][len(REPLY) :]
        for event in LogReader(logfile)
        if event["event"] == "reply" and event["msg"].startswith(REPLY)
    ]


def node_events(node: Node) -> list[Parsed]:
    return [event for path in node.files() for event in LogReader(path)]


def is_load(event: Parsed) -> bool:
    return event["event"] == "message" and bool(LOAD_MESSAGE.match(event["msg"]))


def load_messages(path: Path) -> int:
    return sum(map(is_load, LogReader(path)))


def load_connections(node: Node) -> set[int]:
    """The client's own ids (c<conn>-) of the connections whose messages ``node`` logged."""
    return {int(e["msg"][1 : e["msg"].index(b"-")]) for e in node_events(node) if is_load(e)}


def lost_connections(summary: dict[str, Any]) -> set[int]:
    """The client's connections its summary reports lost before their end."""
    return {int(n) for n in re.findall(r"connection #(\d+) lost", " ".join(summary["problems"]))}


# --------------------------------------------------------------------------
# What every fleet run must show at its end
# --------------------------------------------------------------------------


def check_acknowledged_logged_once(fleet: Fleet, *acked: list[bytes]) -> dict[str, Any]:
    """Every acknowledged message is in exactly one node's log, and no message in two."""
    logged = {
        node.name: collections.Counter(e["msg"] for e in node_events(node) if is_load(e))
        for node in fleet.nodes
    }
    everywhere = sum(logged.values(), collections.Counter())
    assert not [m for m, n in everywhere.items() if n > 1], "a message logged twice"
    every_ack = [m for run in acked for m in run]
    assert len(set(every_ack)) == len(every_ack), "a message acknowledged twice"
    missing = [m for m in every_ack if everywhere[m] != 1]
    assert not missing, f"{len(missing)} acknowledged messages not logged: {missing[:5]}"
    return {
        "acked": len(every_ack),
        "acked_per_run": [len(run) for run in acked],
        "logged_per_node": {name: sum(c.values()) for name, c in logged.items()},
        # Logged, reply lost on the way (a node killed or hung): at least once.
        "logged_not_acked": len(set(everywhere) - set(every_ack)),
    }


def check_connections(fleet: Fleet, sessions: int) -> None:
    """Connection ids are unique per node, and each node logged its clients' own addresses.

    HAProxy's log says which client address (the one it accepted) went to
    which node; the node must have logged that address and port, not
    HAProxy's (PROXY v2).  Health checks (PROXY v2 LOCAL) are logged with
    HAProxy's address and are not client sessions.
    """
    assert f'tcp-check send "{CHECK.decode()}\\n"' in fleet.config["haproxy.cfg"]
    wait_until(lambda: len(fleet.sessions()) >= sessions, 10, f"HAProxy's {sessions} sessions")
    assert len(fleet.sessions()) == sessions, fleet.sessions()
    for node in fleet.nodes:
        events = node_events(node)
        conns = [e["conn"] for e in events if e["event"] == "connect"]
        assert len(conns) == len(set(conns)), f"{node.name}: a connection id twice"
        assert {e["conn"] for e in events if "conn" in e} <= set(conns), node.name
        clients = {
            (e["ip"], e["port"]) for e in events if e["event"] == "message" and e["msg"] != CHECK
        }
        proxied = {(ip, port) for ip, port, name in fleet.sessions() if name == node.name}
        assert clients == proxied, node.name


def check_collector(fleet: Fleet) -> dict[str, Any]:
    """The collector holds every record of every node in that node's file, byte for byte.

    RELP is at least once: a record may come twice (counted), never be
    missing, and nothing else may be there.  Call once the nodes have stopped.
    """
    expected = {
        node.name: collections.Counter(complete_records(*node.files())) for node in fleet.nodes
    }

    def delivered() -> dict[str, collections.Counter[bytes]]:
        return {
            node.name: collections.Counter(complete_records(fleet.central_file(node)))
            for node in fleet.nodes
        }

    try:
        wait_until(
            lambda: all(not expected[n] - got for n, got in delivered().items()),
            30,
            "every node's records at the collector",
            interval=0.1,
        )
    except AssertionError as error:
        absent = {n: expected[n] - got for n, got in delivered().items()}
        counts = {n: sum(c.values()) for n, c in absent.items()}
        examples = {n: [r[:200] for r in list(c)[:2]] for n, c in absent.items()}
        raise AssertionError(f"{error}; missing: {counts}, e.g. {examples}") from None
    central = delivered()
    for name, records in central.items():
        assert set(records) == set(expected[name]), f"{name}: a record no node wrote"
    return {
        "records_per_node": {n: sum(c.values()) for n, c in expected.items()},
        "records_central": {n: sum(c.values()) for n, c in central.items()},
        "duplicates": {n: sum((central[n] - expected[n]).values()) for n in central},
        "lost": {n: sum((expected[n] - central[n]).values()) for n in central},
    }


def check_fleet_report(fleet: Fleet, tmp_path: Path, killed: Node) -> None:
    """The report of the collector's files: each node's messages as its own logs hold them
    (health checks apart), the killed node named silent, the others stopped.

    HAProxy checks every node twice a second, so a node that is up never
    pauses for a second; the killed one stopped at least run 2's 2 s before
    the others' Server Stopped.
    """
    central = [str(fleet.central_file(node)) for node in fleet.nodes]
    out = tmp_path / "report"
    options = ["--health-check", CHECK.decode(), "--silent-after", "1", "-o", str(out)]
    assert report_main([*central, *options]) == 0  # its table: pytest -s shows it
    summary = json.loads((out / "summary.json").read_text())
    rows = {row["node"]: row for row in summary["nodes"]}
    assert sorted(rows) == NAMES
    for node in fleet.nodes:
        events = node_events(node)
        assert all(event["node"] == node.name for event in events), node.name
        messages = [e for e in events if e["event"] == "message"]
        checks = sum(e["msg"] == CHECK for e in messages)
        row = rows[node.name]
        assert checks > 0 and row["health_checks"] >= checks, (node.name, row)
        assert row["messages"] >= len(messages) - checks, (node.name, row)  # RELP may repeat
        ended = row["silent_s"] is not None, row["stops"]
        assert ended == ((True, 0) if node is killed else (False, 1)), (node.name, row)


def stop_shipping(fleet: Fleet) -> None:
    """Stop the shippers, then the collector: each exits cleanly."""
    for node in fleet.nodes:
        assert node.shipper is not None and node.shipper.stop() == 0, node.name
    assert fleet.collector is not None and fleet.collector.stop() == 0


def report(tmp_path: Path, name: str, figures: dict[str, Any]) -> None:
    """Keep the run's figures (``pytest -s`` shows them)."""
    (tmp_path / f"{name}.json").write_text(json.dumps(figures, indent=1))
    print(f"{name}:", json.dumps(figures))


# --------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------


def test_node_killed_under_load(fleet: Fleet, tmp_path: Path) -> None:
    """A node killed under load is marked DOWN in time, new clients go elsewhere, and no record is lost."""
    node1, node2, node3 = (fleet.node(name) for name in NAMES)
    timing = CheckTiming.of(fleet.config["haproxy.cfg"])
    figures: dict[str, Any] = {}

    # Run 1: six connections, spread by leastconn, two per node.
    client1 = fleet.load(
        tmp_path / "client1.log", connections=6, rate=1200, duration=5, size=SIZE_1, timeout=5
    )
    wait_until(
        lambda: all(load_messages(n.log_path) >= 300 for n in fleet.nodes), 15, "load on every node"
    )

    # Rotate node1's log under load: move, then SIGHUP (contrib/chatlog.logrotate).
    node1.log_path.rename(node1.workdir / "chatlog.log.1")
    node1.server.send_signal(signal.SIGHUP)
    node1.server.wait_output(rb"reopened log")
    wait_until(lambda: load_messages(node1.log_path) >= 200, 15, "load on node1's new log")

    # The longest record chatlog writes (a line of --max-line control bytes,
    # 6 bytes each in JSON) and one that is not UTF-8 must arrive whole.
    for line in LONG_LINES:
        with LineClient(("127.0.0.1", fleet.front_port), timeout=10) as client:
            client.send(line + b"\n")
            assert client.line() == REPLY + line

    # Kill node2: HAProxy marks it DOWN within its check timing.
    killed_at = time.monotonic()
    node2.signal(signal.SIGKILL)
    wait_until(lambda: fleet.stats()["node2"]["status"].startswith("DOWN"), 10, "node2 DOWN")
    figures["mark_down_s"] = round(time.monotonic() - killed_at, 3)
    assert figures["mark_down_s"] <= timing.down_within(answers_refused=True) + SLACK, figures
    assert process_gone(node2.pid)
    wait_until(lambda: b"Server chatlog/node2 is DOWN" in fleet.haproxy_log(), 10, "the log")

    # Run 2, new connections after the mark-down: node1 and node3 take them
    # all; HAProxy does not even try node2.
    before = fleet.stats()
    client2 = fleet.load(
        tmp_path / "client2.log", connections=4, rate=800, duration=2, size=SIZE_2, timeout=5
    )
    code2, summary2 = finish(client2)
    code1, summary1 = finish(client1)
    after = fleet.stats()
    assert code2 == 0 and summary2["errors"] == 0, summary2
    assert after["node2"]["stot"] == before["node2"]["stot"], "a session went to the DOWN node"
    assert after["node2"]["econ"] == before["node2"]["econ"], "HAProxy tried the DOWN node"
    assert sum(int(after[n]["stot"]) - int(before[n]["stot"]) for n in ("node1", "node3")) == 4
    for name in ("node1", "node3"):
        assert after[name]["status"] == "UP" and after[name]["chkdown"] == "0", after[name]
    # Run 1 lost its two connections to node2, and only those.
    assert code1 == 1, summary1
    assert lost_connections(summary1) == load_connections(node2), summary1["problems"]
    assert len(load_connections(node2)) == 2

    acked1, acked2 = acknowledged(tmp_path / "client1.log"), acknowledged(tmp_path / "client2.log")
    assert (len(acked1), len(acked2)) == (summary1["messages"], summary2["messages"])
    assert {len(m) for m in acked1} == {TEXT_1} and {len(m) for m in acked2} == {TEXT_2}

    # The surviving nodes stop cleanly: their stop records are the last to ship.
    for node in (node1, node3):
        assert node.server.stop() == -signal.SIGTERM
    figures |= check_acknowledged_logged_once(fleet, acked1, acked2)
    run2 = {
        n.name: sum(len(e["msg"]) == TEXT_2 for e in node_events(n) if is_load(e))
        for n in fleet.nodes
    }
    assert run2["node2"] == 0 and run2["node1"] > 0 and run2["node3"] > 0, run2
    check_connections(fleet, sessions=6 + 4 + len(LONG_LINES))
    # The rotation happened mid-run: node1's records are in both its files.
    assert [load_messages(p) > 0 for p in node1.files()] == [True, True]
    figures |= check_collector(fleet)
    assert sum(figures["lost"].values()) == 0
    stop_shipping(fleet)
    check_fleet_report(fleet, tmp_path, killed=node2)
    report(tmp_path, "killed-node", figures)


def test_node_hung_under_load(fleet: Fleet, tmp_path: Path) -> None:
    """A node that accepts but no longer answers fails its chatlog check, and HAProxy shuts its sessions.

    A plain TCP check would keep it UP (the kernel still accepts for it), and
    without ``on-marked-down shutdown-sessions`` its clients would wait on it.
    """
    node3 = fleet.node("node3")
    timing = CheckTiming.of(fleet.config["haproxy.cfg"])
    figures: dict[str, Any] = {}
    client = fleet.load(
        tmp_path / "client.log", connections=6, rate=900, duration=5, size=SIZE_1, timeout=10
    )
    wait_until(
        lambda: all(load_messages(n.log_path) >= 150 for n in fleet.nodes), 15, "load on every node"
    )

    hung_at = time.monotonic()
    node3.signal(signal.SIGSTOP)
    down = timing.down_within(answers_refused=False)
    wait_until(lambda: fleet.stats()["node3"]["status"].startswith("DOWN"), down + 5, "DOWN")
    figures["mark_down_s"] = round(time.monotonic() - hung_at, 3)
    assert figures["mark_down_s"] <= down + SLACK, figures
    # HAProxy closes the sessions still on node3 as it marks it DOWN.
    wait_until(lambda: fleet.stats()["node3"]["scur"] == "0", 2, "node3's sessions shut")
    figures["sessions_shut_s"] = round(time.monotonic() - hung_at, 3)

    # Back: node3 answers its checks again and is UP after `rise` of them.
    node3.signal(signal.SIGCONT)
    wait_until(lambda: fleet.stats()["node3"]["status"] == "UP", 10, "node3 UP again")

    code, summary = finish(client)
    # The client lost the connections HAProxy shut, and only those; it never
    # sat waiting for replies (that would be a "replies missing" problem).
    assert code == 1, summary
    assert lost_connections(summary) == load_connections(node3), summary["problems"]
    assert not any("missing" in p for p in summary["problems"]), summary["problems"]
    acked = acknowledged(tmp_path / "client.log")
    assert len(acked) == summary["messages"]
    for node in fleet.nodes:
        assert node.server.stop() == -signal.SIGTERM
    figures |= check_acknowledged_logged_once(fleet, acked)
    check_connections(fleet, sessions=6)
    figures |= check_collector(fleet)
    assert sum(figures["lost"].values()) == 0
    stop_shipping(fleet)
    report(tmp_path, "hung-node", figures)
