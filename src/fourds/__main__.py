"""``python -m fourds`` = the ``fourds`` command."""

import sys

from fourds.cli import main

sys.exit(main())
