import sys

from ringvisor.cli import main

sys.exit(main())
