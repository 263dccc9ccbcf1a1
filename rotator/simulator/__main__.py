"""``python -m rotator.simulator``: serve the simulator until SIGTERM or SIGINT."""

import sys

from rotator.simulator.core import main

sys.exit(main())
