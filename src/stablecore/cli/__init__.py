"""The `stable-core` command line: server, jobs, plugins and model files."""

from stablecore.cli.main import main

__all__ = ["main"]
