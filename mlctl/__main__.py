"""``python -m mlctl``: the same as the ``mlctl`` command."""

from mlctl.cli.app import main

main()
