"""Programs and helpers the tests start or import; no test module lives here.

- `process_worker.py`, `event_worker.py`: worker processes of tests/processes/;
- `cluster_app.py`, `cluster_service.py`: the uvicorn app and the fake external service of
  tests/processes/test_cluster.py, with `cluster_support.py` (starting them, and a
  PostgreSQL server of the test's own) and `cluster_audit.py` (what that test checks);
- `process_functions.py`: module-level poll functions for `executor="process"`;
- `examples_support.py`: importing examples/*.py afresh, for tests/examples/.
"""
