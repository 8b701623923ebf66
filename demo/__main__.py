from .scene_demo import main

raise SystemExit(main())
