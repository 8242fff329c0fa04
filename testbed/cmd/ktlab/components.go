package main

import (
	"os"

	"github.com/coredns/coredns/core/dnsserver"
	corednsmain "github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

// upstream maps a component name to its upstream entry point.
var upstream = map[string]func(args []string) int{
	"etcd": func(args []string) int {
		etcdmain.Main(append([]string{"etcd"}, args...))
		return 0
	},
	"kube-apiserver":          cobraMain(apiserver.NewAPIServerCommand),
	"kube-controller-manager": cobraMain(controllermanager.NewControllerManagerCommand),
	"kube-scheduler": cobraMain(func() *cobraCommand {
		return scheduler.NewSchedulerCommand()
	}),
	"kube-proxy": cobraMain(proxy.NewProxyCommand),
	"kubectl":    cobraMain(kubectlcmd.NewDefaultKubectlCommand),
	"coredns": func(args []string) int {
		// Only the plugins the lab links, in CoreDNS's own plugin.cfg order.
		dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "loadbalance", "cache", "hosts", "kubernetes"}
		os.Args = append([]string{"coredns"}, args...)
		corednsmain.Run()
		return 0
	},
}

func cobraMain(mk func() *cobraCommand) func(args []string) int {
	return func(args []string) int {
		cmd := mk()
		cmd.SetArgs(args)
		return cli.Run(cmd)
	}
}
