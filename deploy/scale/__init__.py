"""The service's `scale` set-up without Docker: N replicas, nginx and Prometheus on loopback (launch.py)."""
