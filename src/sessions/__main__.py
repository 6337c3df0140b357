from sessions.cli import main

raise SystemExit(main())
