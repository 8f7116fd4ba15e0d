"""``python -m zhrag.cli`` (and ``accelerate launch -m zhrag.cli``): the ``zhrag`` console script."""

import sys

from zhrag.cli import main

sys.exit(main())
