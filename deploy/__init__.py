"""Deployment: nginx in front of replicas, the local launcher (deploy/scale), Kubernetes manifests (deploy/k8s)."""
