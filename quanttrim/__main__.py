from quanttrim.cli import main

raise SystemExit(main())
