from __future__ import annotations

from daemon.simulator.cli import main

raise SystemExit(main())
