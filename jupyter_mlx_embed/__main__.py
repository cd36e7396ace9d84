"""``python -m jupyter_mlx_embed``: the command line."""

from .cli import main

raise SystemExit(main())
