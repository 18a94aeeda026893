"""Rewrite each room's __init__: a docstring indexing its modules (each one's first sentence) and lazy re-exports
of their public functions and classes. Run from the repository root after adding, removing or renaming a module."""
from __future__ import annotations

import ast
import textwrap
from collections import Counter
from pathlib import Path

ROOMS = {
    "access": "Who may do what: identities, roles, permissions, confined paths, and the audit trail.",
    "app": "The Streamlit side: everything that imports streamlit lives here (pages/ and app.py call it).",
    "cli": "``python -m xraycore VERB``: the parser and one module per group of verbs.",
    "common": "Leaf helpers every room may use (imports nothing else of xraycore): files written atomically, safe JSON\n"
              "and tensor files, the one file hash, the one clock, model-directory errors.",
    "clinical": "Which threshold answers: operating points, site calibration fits, releases, triage.",
    "evaluation": "Numbers about models: external evaluations, comparisons, figures, study reports, model cards.",
    "explain": "Where the network looked: CAM from the forward pass and Grad-CAM overlays.",
    "inference": "Films in, Predictions out: the Predictor, model directories, backends, export, self-check.",
    "inference/backends": "The inference backends: which one answers, torch and ONNX Runtime.",
    "io": "Files to images: PNG/JPEG/DICOM reading, typed read errors, intended-use facts.",
    "metrics": "Pure metric functions over numpy arrays: classification, ranking, calibration, bootstrap, drift.",
    "monitoring": "Is the model still working after go-live: scored films recorded, windows, drift, expected and "
                  "realised performance, alerts.",
    "models": "The backbone registry (facts as data), builders, heads, freezing, and weights sources.",
    "ood": "Is this film like the training films? Feature distances for the out-of-domain check.",
    "reading_room": "The radiologist's side of the hospital: PACS networking, worklist, DICOM results, PDFs.",
    "runs": "Run directories on disk, written so a killed process never leaves a lie, and process liveness.",
    "store": "The database (SQLAlchemy 2 + Alembic): radiologists' reads, scored films, kept film pixels, settings; "
             "SQLite by default, PostgreSQL by URL. Imports nothing of ours but common.",
    "training": "Training: loop, validation scoring, optimisation, checkpoints, distributed, config, presets, "
                "studies, background jobs and their queue.",
}
LAZY = '''
from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {exports}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
'''


def public_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
            and not node.name.startswith("_")]


def first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = doc.strip().split("\n\n")[0]
    sentence = " ".join(paragraph.split())
    return sentence.split(". ")[0].rstrip(".") if sentence else ""


def write(room: str, title: str) -> None:
    folder = Path("xraycore", room)
    modules = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    names = {p.stem: public_names(p) for p in modules}
    counts = Counter(name for found in names.values() for name in found)
    exports = {stem: tuple(n for n in found if counts[n] == 1 and n not in names) for stem, found in names.items()}
    exports = {stem: found for stem, found in exports.items() if found}
    width = max((len(p.stem) for p in modules), default=0)
    index = []
    for p in modules:
        line = first_line(p).replace("``", "`")
        wrapped = textwrap.wrap(line, 110 - width - 6) or [""]
        index.append(f"    {p.stem.ljust(width)}  {wrapped[0]}")
        index += [f"    {' ' * width}  {rest}" for rest in wrapped[1:]]
    subpackages = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    index += [f"    {(s + '/').ljust(width)}  see its own index" for s in subpackages]
    title = "\n".join(textwrap.wrap(title, 110))
    doc = (f'"""{title}\n\n' + "\n".join(index) +
           "\n\nThe functions and classes named below are importable from this package too; each is imported "
           "from its\nmodule on first use, so importing the package is cheap and pulls in no torch.\n\"\"\"")
    def tuple_text(stem: str, found: tuple[str, ...]) -> str:
        body = ", ".join(f'"{n}"' for n in found) + ("," if len(found) == 1 else "")
        lines = textwrap.wrap(body, 110, initial_indent=f'    "{stem}": (', subsequent_indent=" " * 8)
        return "\n".join(lines) + "),\n"

    formatted = "{\n" + "".join(tuple_text(stem, found) for stem, found in exports.items()) + "}"
    (folder / "__init__.py").write_text(doc + "\n" + LAZY.format(exports=formatted))


if __name__ == "__main__":
    for room, title in ROOMS.items():
        write(room, title)
