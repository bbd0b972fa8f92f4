"""Storage: the tables and the queries on them; synchronous, run on worker threads.

Private: nothing here is public API. It imports only the base modules (models,
triggers, exceptions, `_apscheduler`, `_rules`), never the engine, the facade or `http/`.
"""
