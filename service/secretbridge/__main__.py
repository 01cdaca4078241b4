from secretbridge.cli import main

raise SystemExit(main())
