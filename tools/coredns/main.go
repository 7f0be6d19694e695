// CoreDNS with only the plugins the real node's Corefile uses (testenv's node/config.rs): upstream's
// main links all of them, and the cloud providers' SDKs among them tripled the cold build. The
// server, its directive order and every plugin are upstream's, unchanged.
package main

import (
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
