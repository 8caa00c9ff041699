//go:build tools

// The CNI plugins the test bed's node uses (bridge with host-local addresses, then portmap;
// containerd runs loopback itself), built by scripts/kube-tools.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
