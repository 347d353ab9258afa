"""``python -m sprintiface <command>``: the command line (sprintiface.cli)."""
import sys

from sprintiface.cli import main

if __name__ == "__main__":
    sys.exit(main())
