//go:build tools

// The OCI runtime containerd's shim runs, for the Kubernetes test bed, built by
// scripts/kube-tools with cgo and the seccomp tag (containerd gives every pod sandbox a seccomp
// profile, which a runc without seccomp refuses).
package tools

import _ "github.com/opencontainers/runc"
