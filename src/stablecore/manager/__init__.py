"""The plugin manager: sources (git, index, local paths), installs into the base or an
isolated environment, and the template for new plugins. Runs in the CLI, never in the server."""
