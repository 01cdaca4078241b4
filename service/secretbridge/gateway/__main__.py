"""`python -m secretbridge.gateway [gateway options]`: the gateway alone."""

from secretbridge.gateway.cli import main

raise SystemExit(main())
