// Package ansible is a stand-in for the Ansible project plugin of operator-sdk, whose module the
// Go module proxy does not serve. It keeps the plugin's name, version and project version, so the
// operator-sdk CLI assembles its plugin bundles as upstream does, but it implements no
// subcommand: `operator-sdk init --plugins=ansible` and `create api` for an Ansible project report
// that the plugin does not support them. Nothing else in operator-sdk depends on it.
package ansible

import (
	"sigs.k8s.io/kubebuilder/v4/pkg/config"
	cfgv3 "sigs.k8s.io/kubebuilder/v4/pkg/config/v3"
	"sigs.k8s.io/kubebuilder/v4/pkg/plugin"
)

var _ plugin.Plugin = Plugin{}

// Plugin is the Ansible project plugin, without its subcommands.
type Plugin struct{}

// Name is the upstream plugin's name.
func (Plugin) Name() string { return "ansible.operatorframework.io" }

// Version is the upstream plugin's version.
func (Plugin) Version() plugin.Version { return plugin.Version{Number: 1} }

// SupportedProjectVersions is the upstream plugin's: PROJECT version 3.
func (Plugin) SupportedProjectVersions() []config.Version {
	return []config.Version{cfgv3.Version}
}
