"""Progress reporting for the CLI: the trainer's events drawn as tqdm bars on stderr."""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class TqdmProgress:
    """Callable progress sink: one bar for decoding the cache, one per epoch."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind in ("cache", "batch") and self.enabled:
            total = event["total"] if kind == "cache" else event["steps"]
            done = event["done"] if kind == "cache" else event["step"]
            label = "decoding images" if kind == "cache" else f"epoch {event['epoch']}"
            if self.bar is None or self.bar.desc != label:
                self._close()
                self.bar = tqdm(total=total, desc=label, file=sys.stderr, leave=False)
            self.bar.n = done
            if kind == "batch":
                self.bar.set_postfix(loss=f"{event['loss']:.4f}", refresh=False)
            self.bar.refresh()
            if done >= total and kind == "cache":
                self._close()
        elif kind == "epoch":
            self._close()
            shown = {k: v for k, v in event.items() if k not in ("kind", "best")}
            text = "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
            print(text + ("  *best*" if event.get("best") else ""), file=sys.stderr, flush=True)
        elif kind in ("message", "start", "done"):
            self._close()
            text = event.get("text") or {"start": f"run {event.get('run')}: {event.get('train')} train / "
                                                  f"{event.get('val')} validation / {event.get('test')} test images",
                                         "done": f"{event.get('state')}: {event.get('run')}"}[kind]
            print(text, file=sys.stderr, flush=True)
