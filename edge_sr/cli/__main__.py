import sys

from edge_sr.cli import main

sys.exit(main())
