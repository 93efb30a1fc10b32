from s2d.cli import main

raise SystemExit(main())
