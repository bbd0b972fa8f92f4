"""Polls end to end through `JobPoller`: `_poll_methods.py`, `_engine/poll_runner.py`."""
