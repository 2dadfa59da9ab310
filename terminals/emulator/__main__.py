"""``python -m terminals.emulator``: see terminals/emulator/server.py for the options."""

import sys

from terminals.emulator.server import main

if __name__ == "__main__":
    sys.exit(main())
