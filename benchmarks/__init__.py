"""The benchmark: the service against the usual Flask pattern and the in-process limit."""
