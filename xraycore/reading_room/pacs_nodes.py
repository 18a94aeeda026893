"""The PACS nodes this server may talk to: a list an administrator keeps, never a host typed on a page.

A page where whoever uses it types a host and port makes the server open DICOM associations to any
address they choose. So the nodes live in a TOML file an administrator keeps: ``.streamlit/pacs_nodes.toml``
beside the app, or the file ``$XRAY_PACS_NODES`` names (see ``.streamlit/pacs_nodes.example.toml``)::

    [nodes.main]
    host = "pacs.hospital.local"
    port = 104
    called_aet = "PACS"
    calling_aet = "XRAY"   # optional: how this workbench names itself (default XRAY)
    timeout = 30           # optional: seconds to wait for the node (default 30)

Every exchange in :mod:`pacs` goes through :func:`exchange`, which checks the role and the node: an app
session (signed in, the loopback demo's user) may use configured nodes only; the operating-system user at a
terminal (``python -m xraycore pacs --host ...``) may name any host, as with any DICOM tool, or pick a
configured one (``--node NAME``). Admins (PACS settings) add and remove nodes with :func:`add_node` and
:func:`remove_node`, each audited; those rewrite the file (comments in it are not kept).
Pure Python: no torch, no Streamlit, no pynetdicom.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from xraycore.access import policy as access
from xraycore.access import audit

NODES_FILE_ENV = "XRAY_PACS_NODES"
DEFAULT_NODES_FILE = access.REPO_ROOT / ".streamlit" / "pacs_nodes.toml"
DEFAULT_CALLING_AET = "XRAY"
TIMEOUT_S = 30.0
NOT_CONFIGURED = ("That PACS node is not configured. Pick one of the configured nodes, or ask an administrator "
                  "to add it.")
_AET = re.compile(r"[ -~]{1,16}")  # AE titles: 16 printable ASCII characters, no backslash
_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")  # a TOML bare key
_HOST = re.compile(r"[A-Za-z0-9.:_-]{1,253}")  # a host name, an IPv4 or an IPv6 address


@dataclass(frozen=True)
class Node:
    """A DICOM node and how this workbench names itself to it."""

    host: str
    port: int
    called_aet: str
    calling_aet: str = DEFAULT_CALLING_AET
    timeout: float = TIMEOUT_S

    def __post_init__(self) -> None:
        for title in (self.called_aet, self.calling_aet):
            if not _AET.fullmatch(title) or "\\" in title or not title.strip():
                raise ValueError(f"{title!r} is not an AE title (1-16 printable ASCII characters, no backslash)")
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"{self.port} is not a TCP port (1-65535)")

    def __str__(self) -> str:
        return f"{self.called_aet} at {self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int, str, str]:
        """What makes two nodes the same node (the timeout does not)."""
        return self.host.strip().lower(), int(self.port), self.called_aet, self.calling_aet


def nodes_file() -> Path:
    from_env = os.environ.get(NODES_FILE_ENV)
    return Path(from_env) if from_env else DEFAULT_NODES_FILE


def parse_node(name: str, fields: Mapping[str, Any]) -> Node:
    """One node of the file, checked; ValueError naming the entry."""
    where = f"PACS node {name!r}"
    if not _NAME.fullmatch(str(name)):
        raise ValueError(f"{where}: a node's name is 1-40 letters, digits, '-' or '_'")
    if not isinstance(fields, Mapping):
        raise ValueError(f"{where}: expected a table with host, port and called_aet")
    host = str(fields.get("host") or "").strip()
    if not _HOST.fullmatch(host):
        raise ValueError(f"{where}: {host!r} is not a host name or address")
    try:
        return Node(host, int(fields.get("port")), str(fields.get("called_aet") or ""),
                    str(fields.get("calling_aet") or DEFAULT_CALLING_AET), float(fields.get("timeout") or TIMEOUT_S))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


def load_nodes(path: Path | None = None) -> dict[str, Node]:
    """The configured nodes by name, in the file's order; no file: none. ValueError for a broken file."""
    path = Path(path) if path is not None else nodes_file()
    if not path.is_file():
        return {}
    try:
        data = access.read_toml(path)
    except ValueError as error:  # tomllib.TOMLDecodeError and toml's decoder error are ValueErrors
        raise ValueError(f"the PACS nodes file {path} is not valid TOML: {error}") from None
    return {str(name): parse_node(str(name), fields) for name, fields in dict(data.get("nodes", {})).items()}


def resolve(name: str, path: Path | None = None) -> Node:
    """The configured node called ``name``; ValueError listing the configured names otherwise."""
    nodes = load_nodes(path)
    if name not in nodes:
        known = ", ".join(nodes) or "none: add one to " + str(path or nodes_file())
        raise ValueError(f"no PACS node named {name!r} is configured (configured: {known})")
    return nodes[name]


def from_command_line(name: str | None, host: str | None, port: int | None, called_aet: str | None,
                      calling_aet: str | None = None, timeout: float | None = None) -> Node:
    """``pacs --node NAME`` (a configured node) or ``--host H --port P --called-aet AET`` (any node: the
    terminal user's own choice); --calling-aet and --timeout override the node's. ValueError in words."""
    if name and host:
        raise ValueError("give either --node (a configured node) or --host, not both")
    if name:
        node = resolve(name)
        return Node(node.host, node.port, node.called_aet, calling_aet or node.calling_aet, timeout or node.timeout)
    if not host:
        raise ValueError("name a configured node (--node NAME) or a host (--host H --port P --called-aet AET)")
    if port is None or not called_aet:
        raise ValueError("--host needs --port and --called-aet")
    return Node(host, port, called_aet, calling_aet or DEFAULT_CALLING_AET, timeout or TIMEOUT_S)


def name_of(node: Node, path: Path | None = None) -> str | None:
    """The configured name of ``node`` (same host, port and AE titles), or None."""
    return next((name for name, known in load_nodes(path).items() if known.address == node.address), None)


def require_configured(node: Node, identity: access.Identity) -> str:
    """What the audit line names the node by: its configured name. A node nobody configured is refused
    (AccessDenied) for every app session; the terminal user may name any host, and it is named as typed."""
    name = name_of(node)
    if name is not None:
        return name
    if identity.via == access.TERMINAL:
        return str(node)
    raise access.AccessDenied(NOT_CONFIGURED)


@contextmanager
def exchange(action: str, node: Node, identity: access.Identity | None, permission: str) -> Iterator[audit.Pending]:
    """Who asks may do this with this node (a configured one), checked before any connection;
    one audit line naming the node (refused, ok or failed)."""
    with access.guarded(action, identity, permission) as line:
        line.note(target=require_configured(node, line.identity))
        yield line


# --------------------------------------------------------------------------- admin: add and remove


def add_node(name: str, node: Node, identity: access.Identity | None = None, path: Path | None = None) -> Node:
    """Add (or replace) the node ``name``: PACS settings only (admins; the terminal user), audited."""
    with access.guarded("pacs.nodes.add", identity, access.PACS_SETTINGS, target=str(name)[:40]) as line:
        node = parse_node(name, {"host": node.host, "port": node.port, "called_aet": node.called_aet,
                                 "calling_aet": node.calling_aet, "timeout": node.timeout})
        nodes = load_nodes(path)
        line.note(old=str(nodes[name]) if name in nodes else None, new=str(node))
        nodes[name] = node
        _write(nodes, path)
    return node


def remove_node(name: str, identity: access.Identity | None = None, path: Path | None = None) -> None:
    """Remove the node ``name``: PACS settings only, audited; ValueError when there is none of that name."""
    with access.guarded("pacs.nodes.remove", identity, access.PACS_SETTINGS, target=str(name)[:40]) as line:
        nodes = load_nodes(path)
        if name not in nodes:
            raise ValueError(f"no PACS node named {name!r} is configured")
        line.note(old=str(nodes.pop(name)))
        _write(nodes, path)


def _write(nodes: Mapping[str, Node], path: Path | None) -> None:
    """The whole file, replaced at once (a reader never sees half of it)."""
    path = Path(path) if path is not None else nodes_file()
    lines = ["# PACS nodes this server may use (python -m xraycore, the Worklist page). Written by the app;",
             "# see .streamlit/pacs_nodes.example.toml.", ""]
    for name, node in nodes.items():
        lines += [f"[nodes.{name}]", f"host = {json.dumps(node.host)}", f"port = {node.port}",
                  f"called_aet = {json.dumps(node.called_aet)}", f"calling_aet = {json.dumps(node.calling_aet)}",
                  f"timeout = {float(node.timeout)}", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".pacs_nodes.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
