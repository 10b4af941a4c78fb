"""``python -m mlip.train`` (also under ``torchrun ... -m mlip.train fit CONFIG``)."""

import sys

from .cli import main

sys.exit(main())
