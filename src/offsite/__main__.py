from offsite.cli import main

raise SystemExit(main())
