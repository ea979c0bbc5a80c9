"""`python -m engine.tiny [FAMILY ...]`: build the named tiny checkpoints (all by default)."""

from engine.tiny import main

raise SystemExit(main())
