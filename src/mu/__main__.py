"""`python -m mu`."""

import sys

from .cli import main

sys.exit(main())
