"""examples/*.py run as the docs say (helpers in tests/support/examples_support.py)."""
