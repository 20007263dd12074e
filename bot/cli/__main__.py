"""``python -m bot.cli``: the ``triage`` command."""

from bot.cli.main import main

raise SystemExit(main())
