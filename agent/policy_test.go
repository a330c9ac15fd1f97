package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// labSpec is the spec of a lab workload: containerd's defaults on the host's network.
func labSpec(t *testing.T, opts ...oci.SpecOpts) *specs.Spec {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "ftwin")
	s, err := oci.GenerateSpecWithPlatform(ctx, nil, "linux/amd64", &containers.Container{ID: "twin"},
		append([]oci.SpecOpts{oci.WithHostNamespace(specs.NetworkNamespace)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPolicy(t *testing.T) {
	lab := Policy{HostNamespaces: []specs.LinuxNamespaceType{specs.NetworkNamespace}}
	for _, tc := range []struct {
		name   string
		policy Policy
		spec   func(*specs.Spec)
		want   []string // what the refusal names; none: allowed
	}{
		{"lab workload", lab, nil, nil},
		{"host network not allowed", Policy{}, nil, []string{"the host's network namespace"}},
		{"prestart hook", lab, func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{Prestart: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "id > /tmp/pwned"}}}}
		}, []string{"OCI hooks"}},
		{"createRuntime hook", lab, func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/true"}}}
		}, []string{"OCI hooks"}},
		{"extra capability", lab, func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
			s.Process.Capabilities.Effective = append(s.Process.Capabilities.Effective, "CAP_SYS_ADMIN")
		}, []string{"capability CAP_SYS_ADMIN"}},
		{"allowed capability", Policy{HostNamespaces: lab.HostNamespaces, Capabilities: []string{"CAP_NET_ADMIN"}}, func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_NET_ADMIN")
		}, nil},
		{"host pid namespace", lab, func(s *specs.Spec) {
			s.Linux.Namespaces = removeNS(s.Linux.Namespaces, specs.PIDNamespace)
		}, []string{"the host's pid namespace"}},
		{"join a namespace by path", lab, func(s *specs.Spec) {
			s.Linux.Namespaces = append(removeNS(s.Linux.Namespaces, specs.IPCNamespace), specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/1/ns/ipc"})
		}, []string{"joining the ipc namespace at /proc/1/ns/ipc"}},
		{"host bind mount", lab, func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/host", Source: "/", Type: "bind", Options: []string{"rbind", "rw"}})
		}, []string{"bind mount of host path / at /host"}},
		{"allowed bind mount", Policy{HostNamespaces: lab.HostNamespaces, BindMounts: []string{"/srv/twins"}}, func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Source: "/srv/twins/a", Type: "bind", Options: []string{"rbind"}})
		}, nil},
		{"bind mount beside an allowed one", Policy{HostNamespaces: lab.HostNamespaces, BindMounts: []string{"/srv/twins"}}, func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Source: "/srv/twins-other", Options: []string{"bind"}})
		}, []string{"bind mount of host path /srv/twins-other"}},
		{"device node", lab, func(s *specs.Spec) {
			s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/sda", Type: "b", Major: 8})
		}, []string{"device /dev/sda"}},
		{"all devices", lab, func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Access: "rwm"})
		}, []string{"access to every device"}},
		{"everything at once", Policy{}, func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{Poststart: []specs.Hook{{Path: "/bin/true"}}}
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_MODULE")
		}, []string{"OCI hooks", "capability CAP_SYS_MODULE", "the host's network namespace"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := labSpec(t)
			if tc.spec != nil {
				tc.spec(s)
			}
			err := tc.policy.Check(s)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var pe *PolicyError
			if !errors.As(err, &pe) || !errors.Is(err, errPolicy) {
				t.Fatalf("err %v: want a *PolicyError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q does not name %q", err, w)
				}
			}
			if len(pe.Refused) != len(tc.want) {
				t.Errorf("refused %q, want exactly %q", pe.Refused, tc.want)
			}
		})
	}
}

func removeNS(nss []specs.LinuxNamespace, t specs.LinuxNamespaceType) []specs.LinuxNamespace {
	var out []specs.LinuxNamespace
	for _, ns := range nss {
		if ns.Type != t {
			out = append(out, ns)
		}
	}
	return out
}
