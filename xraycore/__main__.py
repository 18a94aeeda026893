"""``python -m xraycore``: see xraycore/cli/main.py."""
import sys

from xraycore.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
