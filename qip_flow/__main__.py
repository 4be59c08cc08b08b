"""``python -m qip_flow`` is the ``qip`` command."""

from qip_flow.cli.main import main

main()
