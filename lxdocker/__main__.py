from lxdocker.cli import main

raise SystemExit(main())
