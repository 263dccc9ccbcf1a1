"""What the tests share: the processes they start, the Kubernetes API stand-in, a fake clock."""
