"""Who may do what, decided: refusals, who acts in an app session or at a terminal, confined paths.

Functions in xraycore that change shared state take an :class:`Identity` and call :func:`require` (or
:func:`guarded`) themselves, so hiding a button in the app is never the only defence. Inside an app session
an action must name who asks (:func:`acting`); from a terminal the caller is the operating-system user, who
owns the files anyway and is recorded as such. Whether code runs inside an app session is the app's to say:
``xraycore.app.auth`` registers its probe here (:func:`set_app_session_probe`), so nothing outside
``xraycore/app/`` imports Streamlit.

The vocabulary (roles, permissions, :class:`Identity`, the roles file) lives in :mod:`identity` and is
re-exported here, so callers keep one name for the whole subject (``access.Identity``, ``access.SCORE``).
Imports run one way: identity ← audit ← policy. Pure Python, no torch, no Streamlit: the app's first page
load imports this.
"""
from __future__ import annotations

import ipaddress
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from xraycore.access import audit
from xraycore.access.identity import (  # noqa: F401 - the vocabulary callers name as access.X
    ADMIN, ANONYMOUS, ANONYMOUS_PERMISSIONS, ANONYMOUS_REFUSAL, CHANGE_OPERATING_POINT, COMPARE,
    DEFAULT_ROLES_FILE, DELETE_RUNS, DOWNLOAD, LOCAL, MANAGE_READS, MONITOR, PACS_QUERY, PACS_SETTINGS, PACS_STORE, PERMISSIONS,
    PREVIEW_MODELS, PREVIEW_OPERATING_POINT, READ_AUDIT, READER, RECORD_READS, RELEASE_MODELS, REPO_ROOT, RESEARCHER, ROLES,
    ROLES_FILE_ENV, SCORE, SIGNED_IN, SITE_SETTINGS, STOP_ANY_JOB, TERMINAL, TRAIN, Identity, RoleConfig, anonymous_identity, can,
    everyone_roles, identity_from_claims, load_roles, local_identity, parse_roles, read_toml, roles_file,
    terminal_identity,
)

DATA_ROOTS_ENV = "XRAY_DATA_ROOTS"


class AccessDenied(PermissionError):
    """An identity asked for something its role does not allow (or typed a path outside the roots)."""


def require(identity: Identity | None, permission: str, action: str | None = None, **audit_fields: Any) -> Identity:
    """``identity`` if it holds ``permission``; otherwise write one 'refused' audit line (when
    ``action`` names what was attempted) and raise :class:`AccessDenied`."""
    if can(identity, permission):
        assert identity is not None
        return identity
    if action is not None:
        audit.record(action, identity, outcome=audit.REFUSED, **audit_fields)
    if identity is not None and identity.via == ANONYMOUS:
        raise AccessDenied(ANONYMOUS_REFUSAL)
    role = identity.role if identity is not None else None
    raise AccessDenied(f"Your role ({role or 'none'}) does not allow this ({permission}). Ask an administrator.")


# --------------------------------------------------------------------------- who acts


def _outside_any_app() -> bool:
    return False


_app_session_probe: Callable[[], bool] = _outside_any_app


def set_app_session_probe(probe: Callable[[], bool]) -> None:
    """Say how to tell an app session from a terminal: ``probe()`` is True inside an app's script run.

    ``xraycore.app.auth`` registers Streamlit's answer when it is imported (app.py and every page import it
    before anything acts); until then nothing is an app session, as in the CLI and the library."""
    global _app_session_probe
    _app_session_probe = probe


def in_app_session() -> bool:
    """True inside an app's script run (a page, a fragment, a callback): there, who asks must be given."""
    return bool(_app_session_probe())


def acting(identity: Identity | None, action: str | None = None, **audit_fields: Any) -> Identity:
    """Who performs an action: ``identity`` when given; the terminal user outside the app; refused
    (and audited) when app code forgot to say who asks, so an omission can never act as admin."""
    if identity is not None:
        return identity
    if not in_app_session():
        return terminal_identity()
    if action is not None:
        audit.record(action, None, outcome=audit.REFUSED, detail="no identity given", **audit_fields)
    raise AccessDenied("Nobody is signed in for this action.")


@contextmanager
def guarded(action: str, identity: Identity | None, permission: str, **fields: Any) -> Iterator[audit.Pending]:
    """Check who asks (refused → one 'refused' line and AccessDenied), then :func:`audit.performing`."""
    who = acting(identity, action, **fields)
    require(who, permission, action, **fields)
    with audit.performing(action, who, **fields) as pending:
        yield pending


# --------------------------------------------------------------------------- serving


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; False for '' / None (every interface) and anything else."""
    if not host:
        return False
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- allowed folders


OUTSIDE_ROOTS = "That location is not inside the folders this server may read. Ask an administrator to add it."


def allowed_roots() -> list[Path]:
    """Where typed paths may point (real paths): ``$XRAY_DATA_ROOTS`` (os.pathsep-separated), else the
    repository's runs/, models/ and data/ folders and the runs folder in use."""
    from_env = os.environ.get(DATA_ROOTS_ENV)
    if from_env:
        roots = [Path(part).expanduser() for part in from_env.split(os.pathsep) if part.strip()]
    else:
        from_runs = os.environ.get("XRAY_RUNS_DIR")
        roots = [REPO_ROOT / "runs", REPO_ROOT / "models", REPO_ROOT / "data", Path(from_runs or Path.cwd() / "runs")]
    return list(dict.fromkeys(Path(os.path.realpath(root)) for root in roots))


def inside_roots(text: str | os.PathLike[str], what: str = "folder", roots: Sequence[Path] | None = None) -> Path:
    """The real path (symlinks followed) of what a user typed, if it lies under an allowed root.

    Anything else gets the same plain refusal whether or not it exists, so the answer reveals nothing
    about what lies outside the roots.
    """
    raw = str(text).strip()
    if not raw:
        raise ValueError(f"Please enter the {what}.")
    real = Path(os.path.realpath(Path(raw).expanduser()))
    for root in (allowed_roots() if roots is None else [Path(os.path.realpath(r)) for r in roots]):
        if real == root or real.is_relative_to(root):
            return real
    raise AccessDenied(OUTSIDE_ROOTS)
