"""The FastAPI side: the management API's routes, auth, `mount_scheduler`, OpenAPI."""
