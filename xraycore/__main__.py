"""``python -m xraycore``: see cli.py."""
import sys

from xraycore.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
