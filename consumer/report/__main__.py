"""``python -m consumer.report``."""

from consumer.report.cli import main

raise SystemExit(main())
