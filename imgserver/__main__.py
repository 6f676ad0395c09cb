from imgserver.cli import main

raise SystemExit(main())
