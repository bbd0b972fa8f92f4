"""Real processes: workers and uvicorn app instances sharing one database."""
