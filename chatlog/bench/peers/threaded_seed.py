"""REFERENCE PEER for the bench, not part of chatlog: the seeds' threaded design.

What the seed documents describe: a thread per client, ``recv(1024)``, a reply
per receive, and a ``log_event(Event_Type, Timestamp, Message)`` that opens
``log.txt`` in append mode, writes ``Event_Type: Timestamp - Message`` and
closes it again, for every event.  Kept as the seed had it, with two changes
so it can be measured fairly against a line protocol: every ``\\n``-terminated
line is one ``Message Received`` event (the seed logged one per ``recv``), and
the reply to a receive answers each of its lines (``Server received: <line>``),
still with one ``send`` per ``recv`` (``sendall``, so a short send loses no
reply).  The listen backlog is the system's
maximum instead of the seed's 5, so that 1000 clients can connect at once.

    python -m chatlog.bench.peers.threaded_seed [PORT]   (log.txt in the current directory)
"""

from __future__ import annotations

import socket
import sys
import threading
import time

LOG = "log.txt"


def log_event(event_type: str, timestamp: str, message: str) -> None:
    with open(LOG, "a") as f:
        f.write(f"{event_type}: {timestamp} - {message}\n")


def handle_client(client_socket: socket.socket, client_address: tuple[str, int]) -> None:
    log_event(
        "Connection", time.strftime("%Y-%m-%d %H:%M:%S"), f"Client {client_address} connected"
    )
    pending = b""
    try:
        while True:
            data = client_socket.recv(1024)
            if not data:
                break
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            if not lines:
                continue
            replies = []
            for line in lines:
                message = line.rstrip(b"\r").decode(errors="replace")
                log_event("Message Received", time.strftime("%Y-%m-%d %H:%M:%S"), message)
                replies.append(f"Server received: {message}\n")
            client_socket.sendall("".join(replies).encode())
    except OSError:
        pass
    finally:
        log_event(
            "Disconnection",
            time.strftime("%Y-%m-%d %H:%M:%S"),
            f"Client {client_address} disconnected",
        )
        client_socket.close()


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server_socket.bind(("127.0.0.1", port))
    server_socket.listen(socket.SOMAXCONN)
    print(f"listening on 127.0.0.1:{server_socket.getsockname()[1]}", flush=True)
    while True:
        client_socket, client_address = server_socket.accept()
        threading.Thread(
            target=handle_client, args=(client_socket, client_address), daemon=True
        ).start()


if __name__ == "__main__":
    main()
