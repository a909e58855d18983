"""`python -m pylake ...` is the `lake` command."""

import sys

from .cli import main

sys.exit(main())
