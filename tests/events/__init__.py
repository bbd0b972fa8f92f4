"""Engine events, their logging, listeners, and the Prometheus metrics fed by them."""
