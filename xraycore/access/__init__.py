"""Who may do what: identities, roles, permissions, confined paths, and the audit trail.

    audit     The audit trail: one JSON line per action that scores images or changes shared state
    identity  Who someone is and what their role lets them do: identities, roles, permissions and the roles
              file
    policy    Who may do what, decided: refusals, who acts in an app session or at a terminal, confined paths

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "audit": ("log_path", "record", "append", "Pending", "performing", "parse_since", "read", "table_row",
        "model_info"),
    "identity": ("Identity", "can", "everyone_roles", "local_identity", "anonymous_identity",
        "terminal_identity", "RoleConfig", "parse_roles", "roles_file", "load_roles", "read_toml",
        "identity_from_claims"),
    "policy": ("AccessDenied", "require", "set_app_session_probe", "in_app_session", "acting", "guarded",
        "is_loopback", "allowed_roots", "inside_roots"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
