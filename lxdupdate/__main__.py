from lxdupdate.cli import main

raise SystemExit(main())
