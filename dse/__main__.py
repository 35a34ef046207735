"""``python -m dse``: the command-line interface."""

import sys

from dse.cli.main import main

sys.exit(main())
