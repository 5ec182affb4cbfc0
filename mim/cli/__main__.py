"""`python -m mim.cli ...` (how torchrun re-launches a multi-process pre-training)."""

import sys

from mim.cli.main import main

sys.exit(main())
