"""The process model: gunicorn settings and worker, CPU pinning, the workers' shared activity,
writing to pipes."""
