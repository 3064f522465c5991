"""The layout's rules, checked on the source: no import cycle, the client apart, one door.

Imports are read from every module's syntax tree, at module level or inside
functions alike (an import moved into a function to dodge a cycle is still a
cycle); only imports under ``if TYPE_CHECKING:`` are left out, since they
never run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "chatlog"

#: Twisted's private names chatlog uses; they may appear in chatlog/_fastpath.py only.
PRIVATE_TWISTED = re.compile(
    r"\b(_poller|_selectables|_doReadOrWrite|_tempDataLen|_writeDisconnected|_makeTransport"
    r"|_proxyInfo|_wrappedEndpoint|_raiseSynchronously|_waitingForPort)\b"
    r"|haproxy\._wrapper|twisted\.\w+(\.\w+)*\._\w+"
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except what sits under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str) -> set[str]:
    """The chatlog modules ``name`` names in its imports (those that can run)."""
    path = MODULES[name]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}: chatlog imports are absolute"
            base = node.module or ""
            # "from chatlog import _fastpath" imports a module; "from x import name" a name.
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        # A module's parent packages are imported first, but a parent that
        # imports its own modules is no cycle: only named imports are edges.
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_is_read() -> None:
    """The reader finds the imports it must (so the rules below judge something)."""
    assert "chatlog.server.factory" in GRAPH["chatlog.server.tap"]
    assert "chatlog.log" in GRAPH["chatlog.server.protocol"]
    assert "chatlog.server.factory" not in GRAPH["chatlog.server.protocol"]  # TYPE_CHECKING only


def test_no_import_cycle() -> None:
    """No chatlog module imports itself through others."""
    cycles = sorted(name for name in GRAPH if name in reachable(name))
    assert cycles == []


def test_the_client_never_imports_the_server() -> None:
    """The client speaks the wire and writes the log formats; the server is none of its business."""
    for name in MODULES:
        if name.startswith("chatlog.client"):
            server = sorted(m for m in reachable(name) if m.startswith("chatlog.server"))
            assert server == [], f"{name} reaches {server}"


def test_private_twisted_names_live_in_one_module() -> None:
    """Every private Twisted name chatlog touches is in chatlog/_fastpath.py, nowhere else."""
    users = sorted(
        name for name, path in MODULES.items() if PRIVATE_TWISTED.search(path.read_text())
    )
    assert users == ["chatlog._fastpath"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_readable(name: str) -> None:
    """No module is over 500 lines, and each says what it is for."""
    source = MODULES[name].read_text()
    assert len(source.splitlines()) <= 500
    assert ast.get_docstring(ast.parse(source)), f"{name} has no module docstring"
