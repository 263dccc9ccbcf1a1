"""``python -m cloudflare_sim``: serve the simulator until SIGTERM or SIGINT."""

import sys

from cloudflare_sim.core import main

sys.exit(main())
