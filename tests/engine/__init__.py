"""The engine's own parts, tested directly: the function registry and the thread pool."""
