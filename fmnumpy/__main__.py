import sys

from fmnumpy.cli.main import main

sys.exit(main())
