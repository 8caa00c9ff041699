//go:build tools

// The node's container runtime for the Kubernetes test bed, built by scripts/kube-tools:
// containerd, its command-line client and the runc shim, from containerd's own main packages.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
