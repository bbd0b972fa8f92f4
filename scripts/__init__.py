"""Developer scripts: docs generation (the `check` script is plain bash)."""
