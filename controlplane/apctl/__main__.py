"""`python -m controlplane.apctl`: the console script without installing."""
import sys

from . import main

sys.exit(main())
