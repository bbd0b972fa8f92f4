"""The engine: claims due work under leases, runs it, writes outcomes back.

Private: nothing here is public API. It imports the storage layer and the rules, never
the facade (`poller.py`) or `http/`.
"""
