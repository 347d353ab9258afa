import sys

from sprintiface.cli import main

sys.exit(main())
