"""``python -m adaptlab ...`` (used by ``accelerate launch -m adaptlab lm train CONFIG``)."""

import sys

from adaptlab.cli import main

sys.exit(main())
