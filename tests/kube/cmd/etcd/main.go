// etcd with etcd's own flags (--data-dir, --listen-client-urls, …), for the Kubernetes test bed.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
