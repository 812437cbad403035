from daemon.early import main

raise SystemExit(main())
