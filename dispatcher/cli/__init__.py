"""Command-line entry points: ``dispatcher`` (server.py) and ``dispatchctl`` (ctl.py)."""
