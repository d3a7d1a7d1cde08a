"""`python -m smartprice` (also what `accelerate launch -m smartprice` runs)."""

import sys

from .cli import main

sys.exit(main())
