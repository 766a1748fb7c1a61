"""``python -m quanttrim.mixed_precision --help``"""
from __future__ import annotations

from quanttrim.mixed_precision.cli import main

raise SystemExit(main())
