import sys

from gdpo.cli import main

sys.exit(main())
