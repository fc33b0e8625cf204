"""``python -m dispatcher`` is the ``dispatcher`` command."""

import sys

from dispatcher.cli.server import main

sys.exit(main())
