"""What users deploy: the container image, the Kubernetes manifests, the alerts and the dashboard,
against the real tools."""
