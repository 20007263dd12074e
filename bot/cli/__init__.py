"""The `triage` command, one module per command group (`main` builds the parser and dispatches)."""
