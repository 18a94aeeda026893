"""Who someone is and what their role lets them do: identities, roles, permissions and the roles file.

The vocabulary every other access module speaks, split out of :mod:`policy` so that the audit trail can
name who acted without importing the module that refuses (which writes to the audit trail): identity ←
audit ← policy, one way. Three roles, each holding the ones before it:

    reader       Diagnose (and a worklist): score images, download results, query/retrieve from PACS
    researcher   + Train (stops only their own jobs), Compare, Operating point as a preview, any run on Diagnose
                   as a research preview
    admin        + save / activate / reset operating points and site calibrations, delete runs,
                   stop anyone's job, PACS settings and store-back, the audit trail, release models for reading

The roles file (``.streamlit/roles.toml`` beside the app, or ``$XRAY_ROLES_FILE``) maps e-mail addresses
and OIDC group names to roles; see ``.streamlit/roles.example.toml``. Pure Python, no torch, no Streamlit.
"""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLES_FILE_ENV = "XRAY_ROLES_FILE"
DEFAULT_ROLES_FILE = REPO_ROOT / ".streamlit" / "roles.toml"

READER, RESEARCHER, ADMIN = "reader", "researcher", "admin"
ROLES = (READER, RESEARCHER, ADMIN)  # lowest first: a role holds every permission of the ones before it

# Permissions: what a page or an xraycore function asks for.
SCORE = "score"
DOWNLOAD = "download"
PACS_QUERY = "pacs.query"  # query and retrieve
TRAIN = "train"  # launch, continue and stop one's own jobs
COMPARE = "compare"
PREVIEW_OPERATING_POINT = "operating_point.preview"
CHANGE_OPERATING_POINT = "operating_point.change"  # save, activate, reset, site calibration
DELETE_RUNS = "runs.delete"
STOP_ANY_JOB = "jobs.stop_any"
PACS_STORE = "pacs.store"
PACS_SETTINGS = "pacs.settings"
READ_AUDIT = "audit.read"
PREVIEW_MODELS = "models.preview"  # score with a model not released for reading, under a banner (clinical/releases.py)
RELEASE_MODELS = "models.release"  # release a model for reading, or withdraw it
RECORD_READS = "reads.record"  # record one's read of a film (and correct or delete one's own reads)
MANAGE_READS = "reads.manage"  # correct or delete anyone's read
SITE_SETTINGS = "site.settings"  # e.g. keep read films for site learning (clinical/site_reads.py)
MONITOR = "monitoring.view"  # the Monitor page: drift, expected performance, alerts (xraycore/monitoring)

_GRANTS: dict[str, frozenset[str]] = {
    READER: frozenset({SCORE, DOWNLOAD, PACS_QUERY, RECORD_READS}),
    RESEARCHER: frozenset({TRAIN, COMPARE, PREVIEW_OPERATING_POINT, PREVIEW_MODELS, MONITOR}),
    ADMIN: frozenset({CHANGE_OPERATING_POINT, DELETE_RUNS, STOP_ANY_JOB, PACS_STORE, PACS_SETTINGS, READ_AUDIT,
                      RELEASE_MODELS, MANAGE_READS, SITE_SETTINGS}),
}
PERMISSIONS: dict[str, frozenset[str]] = {
    role: frozenset().union(*(_GRANTS[lower] for lower in ROLES[:index + 1])) for index, role in enumerate(ROLES)
}
# A visitor of a network server without sign-in (a reader by role) may score their own images and download
# those results, nothing more: the PACS (query, retrieve, its films' results) needs a known person.
ANONYMOUS_PERMISSIONS = frozenset({SCORE, DOWNLOAD})
ANONYMOUS_REFUSAL = ("This server has no sign-in, so visitors may only score their own images. Ask an "
                     "administrator to configure sign-in.")

# How a person came to be known: signed in through OIDC, the one local user of a loopback demo, an
# anonymous visitor of a network server without sign-in, or the operating-system user at a terminal.
SIGNED_IN, LOCAL, ANONYMOUS, TERMINAL = "oidc", "local", "anonymous", "terminal"


@dataclass(frozen=True)
class Identity:
    """A person and their roles. ``email`` is None for the local, anonymous and terminal users."""

    name: str
    email: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    via: str = SIGNED_IN

    def __post_init__(self) -> None:
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown role(s): {', '.join(sorted(unknown))}; the roles are {', '.join(ROLES)}")
        object.__setattr__(self, "roles", frozenset(self.roles))

    @property
    def user(self) -> str:
        """What the audit trail and job ownership key on: the e-mail address, else the name."""
        return self.email.strip().lower() if self.email else self.name

    @property
    def role(self) -> str | None:
        """The highest role held (None: no access at all)."""
        held = [role for role in ROLES if role in self.roles]
        return held[-1] if held else None

    @property
    def permissions(self) -> frozenset[str]:
        granted = frozenset().union(*(PERMISSIONS[role] for role in self.roles))
        return granted & ANONYMOUS_PERMISSIONS if self.via == ANONYMOUS else granted

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def can(identity: Identity | None, permission: str) -> bool:
    """True when ``identity`` holds ``permission``; nobody (None) holds nothing."""
    return identity is not None and identity.can(permission)


def everyone_roles() -> frozenset[str]:
    return frozenset(ROLES)


def local_identity() -> Identity:
    """The one user of a laptop demo on loopback without sign-in: every role, said so on every page."""
    return Identity(f"local user ({_os_user()})", None, everyone_roles(), LOCAL)


def anonymous_identity() -> Identity:
    """A visitor of a server reachable from the network without sign-in: may score their own images, changes
    nothing and reaches no PACS (:data:`ANONYMOUS_PERMISSIONS`)."""
    return Identity("anonymous (no sign-in)", None, frozenset({READER}), ANONYMOUS)


def terminal_identity() -> Identity:
    """Whoever runs ``python -m xraycore`` or the library: the operating-system user, every role."""
    return Identity(f"{_os_user()} (terminal)", None, everyone_roles(), TERMINAL)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"uid {os.getuid()}"


# --------------------------------------------------------------------------- the roles file


@dataclass(frozen=True)
class RoleConfig:
    """E-mail addresses and group names → roles, as the roles file says."""

    emails: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)
    group_claim: str = "groups"
    default_role: str | None = None  # for a signed-in person nothing names: none by default

    def roles_for(self, email: str | None, groups: Iterable[str]) -> frozenset[str]:
        """Every role the e-mail address or a group gives, and the roles below the highest of them."""
        found = set()
        if email and email.strip().lower() in self.emails:
            found.add(self.emails[email.strip().lower()])
        found.update(self.groups[group] for group in groups if group in self.groups)
        if not found and self.default_role:
            found.add(self.default_role)
        if not found:
            return frozenset()
        highest = max(ROLES.index(role) for role in found)
        return frozenset(ROLES[:highest + 1])


def _check_role(value: Any, where: str) -> str:
    if value not in ROLES:
        raise ValueError(f"{where}: {value!r} is not a role; use one of {', '.join(ROLES)}")
    return value


def parse_roles(data: Mapping[str, Any]) -> RoleConfig:
    """A RoleConfig from the roles file's parsed TOML; ValueError naming the bad entry."""
    emails = {str(key).strip().lower(): _check_role(value, f"[emails] {key}")
              for key, value in dict(data.get("emails", {})).items()}
    groups = {str(key): _check_role(value, f"[groups] {key}") for key, value in dict(data.get("groups", {})).items()}
    default = data.get("default_role") or None
    if default is not None:
        _check_role(default, "default_role")
    return RoleConfig(emails, groups, str(data.get("group_claim", "groups")), default)


def roles_file() -> Path:
    from_env = os.environ.get(ROLES_FILE_ENV)
    return Path(from_env) if from_env else DEFAULT_ROLES_FILE


_ROLES_CACHE: dict[Path, tuple[tuple[int, int], RoleConfig]] = {}


def load_roles(path: Path | None = None) -> RoleConfig:
    """The roles file (re-read when it changes); no file gives nobody a role."""
    path = Path(path) if path is not None else roles_file()
    try:
        stat = path.stat()
    except FileNotFoundError:
        return RoleConfig()
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _ROLES_CACHE.get(path)
    if cached and cached[0] == key:
        return cached[1]
    config = parse_roles(read_toml(path))
    _ROLES_CACHE[path] = (key, config)
    return config


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file, parsed (tomllib; on Python 3.10 Streamlit's own TOML reader): the roles file, the PACS nodes."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: Streamlit's own TOML reader
        import toml

        return toml.loads(path.read_text(encoding="utf-8"))
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def identity_from_claims(claims: Mapping[str, Any], config: RoleConfig) -> Identity:
    """A signed-in person from the ID token's claims (Streamlit's ``st.user``) and the roles file."""
    email = claims.get("email") or None
    raw_groups = claims.get(config.group_claim) or []
    groups = [raw_groups] if isinstance(raw_groups, str) else [str(group) for group in raw_groups]
    name = str(claims.get("name") or email or claims.get("sub") or "signed-in user")
    return Identity(name, str(email) if email else None, config.roles_for(email, groups), SIGNED_IN)
