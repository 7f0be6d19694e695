// Stand-in for github.com/operator-framework/ansible-operator-plugins, which the Go module proxy
// refuses to serve (every version, including the v1.42.3 that operator-sdk v1.42.3 requires).
// operator-sdk imports only pkg/plugins/ansible/v1 and only its Plugin type, to register the
// "ansible" project plugin. See ../go.mod.
module github.com/operator-framework/ansible-operator-plugins

go 1.24.0

require sigs.k8s.io/kubebuilder/v4 v4.6.0
