from livegen.view.app import main

raise SystemExit(main())
