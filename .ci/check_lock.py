"""Fail when any package pinned in the lock file is installed at another version (or is missing)."""
from __future__ import annotations

import re
import sys
from importlib import metadata


def pins(lock_path: str) -> dict[str, str]:
    pinned = {}
    for line in open(lock_path, encoding="utf-8"):
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pinned[match.group(1)] = match.group(2)
    return pinned


def main(lock_path: str) -> int:
    wrong = []
    for name, version in pins(lock_path).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: missing (lock says {version})")
            continue
        if installed.split("+")[0] != version.split("+")[0]:
            wrong.append(f"{name}: {installed} installed, lock says {version}")
    print(f"lock check: {len(pins(lock_path)) - len(wrong)} of {len(pins(lock_path))} packages at their locked version")
    for line in wrong:
        print("  " + line)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
