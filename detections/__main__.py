"""``python -m detections rules ...``: the rules commands without the rest of the CLI."""

import sys

from detections.cli import main

sys.exit(main())
