"""Fixtures that run the local control plane (etcd and kube-apiserver) for tests."""
