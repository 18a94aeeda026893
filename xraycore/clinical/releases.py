"""Which models readers may answer with: the bundled default, plus the models an admin has released for reading.

Every finished run (a ten-image quick check included) used to be in every reader's model list. Now a reader
sees, and may score with, only a *released* model; researchers may still try any run on Diagnose, under a
"research preview: not released" banner. Releasing and withdrawing are admin actions, checked here
(:func:`access.require`) and audited, never only a hidden button.

A release is kept in ``<runs folder>/released.json`` (shared by every session and the CLI, written atomically)
and names the model directory's real path **and the sha256 of its weights** (every member's, for an ensemble),
who released it and when: a directory whose weights change after the release (retrained, copied over) is not
released any more until an admin releases it again. The bundled default (``$XRAY_MODEL_DIR``, else
``models/default``) is released as shipped. No torch, no Streamlit: the app's sidebar asks this on every page.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.runs import directory as runs
from xraycore.common.files import atomic_write_json, read_json_file
from xraycore.common.timestamps import utc_timestamp

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR_ENV = "XRAY_MODEL_DIR"
BUNDLED_MODEL_DIR = REPO_ROOT / "models" / "default"
RELEASES_FILE = "released.json"
PREVIEW_BANNER = "research preview: not released"
NOT_RELEASED = ("This model is not released for reading: pick a released model, or ask an administrator to "
                "release this one.")


def bundled_model_dir() -> Path:
    """``$XRAY_MODEL_DIR`` if set, else ``models/default`` next to the package."""
    from_env = os.environ.get(MODEL_DIR_ENV)
    return Path(from_env) if from_env else BUNDLED_MODEL_DIR


def releases_file(root: Path | None = None) -> Path:
    return runs.runs_root(root) / RELEASES_FILE


def _real(model_dir: str | os.PathLike[str]) -> str:
    return os.path.realpath(Path(model_dir))


def is_bundled(model_dir: str | os.PathLike[str]) -> bool:
    return _real(model_dir) == _real(bundled_model_dir())


def weights_digest(model_dir: str | os.PathLike[str]) -> str | None:
    """sha256 of the weights (of every member's, for an ensemble); None when the directory holds none."""
    if not (Path(model_dir) / runs.CONFIG_FILE).is_file():
        return None
    return audit.model_info(model_dir)["sha256"]


def load(root: Path | None = None) -> dict[str, Any]:
    """{"models": {real path: {"sha256", "name", "released_by", "released"}}, "history": [...]}."""
    stored = read_json_file(releases_file(root), None)
    if not isinstance(stored, dict):
        return {"models": {}, "history": []}
    models = stored.get("models") if isinstance(stored.get("models"), dict) else {}
    return {"models": dict(models), "history": list(stored.get("history") or [])}


def is_released(model_dir: str | os.PathLike[str], root: Path | None = None) -> bool:
    """True for the bundled default, and for a directory released with the weights it holds now."""
    if is_bundled(model_dir):
        return True
    record = load(root)["models"].get(_real(model_dir))
    return bool(record) and record.get("sha256") is not None and record.get("sha256") == weights_digest(model_dir)


def may_preview(identity: access.Identity | None) -> bool:
    """Researchers and admins may score with any run (under the preview banner)."""
    return access.can(identity, access.PREVIEW_MODELS)


def offered(model_dir: str | os.PathLike[str], identity: access.Identity | None, root: Path | None = None) -> bool:
    """Whether a model list shown to ``identity`` holds this model (None: a terminal or the library, all)."""
    return identity is None or may_preview(identity) or is_released(model_dir, root)


def require_released(model_dir: str | os.PathLike[str], identity: access.Identity | None,
                     root: Path | None = None) -> bool:
    """Before ``identity`` scores with ``model_dir``: True when it is released; False when it is not but
    ``identity`` may preview it (say :data:`PREVIEW_BANNER`); otherwise one 'refused' score line and
    :class:`access.AccessDenied` (a reader whose session names an unreleased model by its path)."""
    if is_released(model_dir, root):
        return True
    if identity is None or may_preview(identity):
        return False
    audit.record("score", identity, outcome=audit.REFUSED, model=audit.model_info(model_dir), detail="not released")
    raise access.AccessDenied(NOT_RELEASED)


@contextmanager
def _locked(root: Path | None) -> Iterator[None]:
    """One writer at a time across processes (two admins, the app and the CLI)."""
    path = releases_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def release(model_dir: str | os.PathLike[str], *, identity: access.Identity | None = None,
            root: Path | None = None) -> dict[str, Any]:
    """Release ``model_dir`` for reading, with the weights it holds now (admin only; one audit line)."""
    return _change(model_dir, True, identity, root)


def withdraw(model_dir: str | os.PathLike[str], *, identity: access.Identity | None = None,
             root: Path | None = None) -> dict[str, Any]:
    """Readers stop seeing ``model_dir`` (admin only; one audit line). The bundled default cannot be withdrawn."""
    return _change(model_dir, False, identity, root)


def _change(model_dir: str | os.PathLike[str], releasing: bool, identity: access.Identity | None,
            root: Path | None) -> dict[str, Any]:
    action = "model.release" if releasing else "model.withdraw"
    with access.guarded(action, identity, access.RELEASE_MODELS, model=audit.model_info(model_dir)) as line:
        real = _real(model_dir)
        if is_bundled(real):
            raise ValueError("The bundled default model is released as shipped; it is not released or withdrawn here.")
        digest = weights_digest(real)
        if digest is None:
            raise ValueError(f"{Path(model_dir).name!r} is not a model directory (config.json and weights).")
        with _locked(root):
            state = load(root)
            old = state["models"].get(real)
            if releasing:
                state["models"][real] = {"name": Path(real).name, "sha256": digest, "released_by": line.identity.user,
                                         "released": utc_timestamp()}
            elif old is None:
                raise ValueError(f"{Path(real).name!r} is not released, so there is nothing to withdraw.")
            else:
                state["models"].pop(real)
            state["history"].append({"time": utc_timestamp(),
                                     "user": line.identity.user, "action": action.split(".")[1], "model": real,
                                     "sha256": digest})
            atomic_write_json(releases_file(root), state)
        line.note(old={"released": old is not None}, new={"released": releasing})
        return state["models"].get(real, {"name": Path(real).name, "sha256": digest})


def listing(root: Path | None = None) -> list[dict[str, Any]]:
    """Every release, with whether the directory still holds the released weights (``current``)."""
    rows = [{"model": _real(bundled_model_dir()), "name": bundled_model_dir().name, "released_by": "shipped",
             "released": None, "current": True}] if weights_digest(bundled_model_dir()) else []
    for path, record in load(root)["models"].items():
        rows.append({"model": path, "name": record.get("name"), "released_by": record.get("released_by"),
                     "released": record.get("released"), "current": weights_digest(path) == record.get("sha256")})
    return rows


def main(model: str | None, withdrawing: bool, root: Path | None = None) -> int:
    """``python -m xraycore release [--model DIR [--withdraw]]``: change one release, then list them all."""
    if model:
        (withdraw if withdrawing else release)(Path(model), root=root)
    for row in listing(root):
        state = "" if row["current"] else "  [weights changed since the release: not offered to readers]"
        print(f"{row['model']}  released by {row['released_by']} {row['released'] or ''}{state}".rstrip())
    return 0
