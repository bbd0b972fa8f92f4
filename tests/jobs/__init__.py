"""Scheduled jobs: triggers, declared jobs, runs end to end (`_job_methods.py`, `triggers.py`)."""
