package agent

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Policy is what the target lets a restored container's spec ask for. The spec comes from the
// peer (it is in the checkpoint), so without a policy any certificate of the CA would be root on
// the target: a spec with an OCI hook runs a command as root in the host's namespaces. The zero
// Policy allows only what an unprivileged container needs: no hooks, the default capabilities
// (containerd's oci defaults), namespaces of its own, no bind mounts of host paths and no
// devices beyond the default ones.
type Policy struct {
	// HostNamespaces the container may share with the host (left out of its spec) or join by
	// path, e.g. specs.NetworkNamespace for a container on the host's network. The user
	// namespace is never required; the mount namespace is always its own.
	HostNamespaces []specs.LinuxNamespaceType
	// BindMounts are host paths (and what lies below them) the container may bind-mount.
	BindMounts []string
	// Capabilities beyond containerd's default set that the container may hold.
	Capabilities []string
	// Devices lets the container have device nodes and device cgroup rules of its own.
	Devices bool
}

// PolicyError lists what a spec asked for that the policy refuses.
type PolicyError struct{ Refused []string }

func (e *PolicyError) Error() string {
	return "the restored container's spec asks for what this host's policy refuses (" + strings.Join(e.Refused, "; ") +
		"): change the container, or allow it on the target (agent.Policy; `ftwin-migrate receive --allow-...`)"
}

// Check returns a *PolicyError naming everything in s the policy refuses, or nil.
func (p Policy) Check(s *specs.Spec) error {
	var refused []string
	if s.Hooks != nil && (len(s.Hooks.Prestart)+len(s.Hooks.CreateRuntime)+len(s.Hooks.CreateContainer)+
		len(s.Hooks.StartContainer)+len(s.Hooks.Poststart)+len(s.Hooks.Poststop) > 0) {
		refused = append(refused, "OCI hooks (they run on the host as root)")
	}
	if s.Process != nil && s.Process.Capabilities != nil {
		c := s.Process.Capabilities
		for _, capability := range slices.Concat(c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient) {
			if !slices.Contains(defaultCapabilities(), capability) && !slices.Contains(p.Capabilities, capability) && !slices.Contains(refused, "capability "+capability) {
				refused = append(refused, "capability "+capability)
			}
		}
	}
	if s.Linux == nil {
		refused = append(refused, "no Linux section (no namespaces of its own)")
	} else {
		refused = append(refused, p.checkNamespaces(s.Linux.Namespaces)...)
		if !p.Devices {
			for _, d := range s.Linux.Devices {
				refused = append(refused, "device "+d.Path)
			}
			if r := s.Linux.Resources; r != nil {
				for _, d := range r.Devices {
					if d.Allow && (d.Type == "" || d.Type == "a") {
						refused = append(refused, "access to every device (device cgroup rule \"a\")")
						break
					}
				}
			}
		}
	}
	for _, m := range s.Mounts {
		if !isBind(m) {
			continue
		}
		if !p.bindAllowed(m.Source) {
			refused = append(refused, fmt.Sprintf("bind mount of host path %s at %s", m.Source, m.Destination))
		}
	}
	if len(refused) > 0 {
		return &PolicyError{Refused: refused}
	}
	return nil
}

// defaultCapabilities is containerd's default set for a new container.
var defaultCapabilities = sync.OnceValue(func() []string {
	ctx := namespaces.WithNamespace(context.Background(), "policy")
	s, err := oci.GenerateSpecWithPlatform(ctx, nil, "linux/amd64", &containers.Container{ID: "policy"})
	if err != nil || s.Process == nil || s.Process.Capabilities == nil {
		return nil
	}
	return s.Process.Capabilities.Bounding
})

func (p Policy) checkNamespaces(nss []specs.LinuxNamespace) []string {
	var refused []string
	// settled: the container has a namespace of its own, or joining one was refused already.
	settled := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range nss {
		if ns.Path != "" && !slices.Contains(p.HostNamespaces, ns.Type) {
			refused = append(refused, fmt.Sprintf("joining the %s namespace at %s", ns.Type, ns.Path))
			settled[ns.Type] = true
			continue
		}
		settled[ns.Type] = settled[ns.Type] || ns.Path == ""
	}
	for _, t := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace, specs.MountNamespace} {
		if settled[t] {
			continue
		}
		if t == specs.MountNamespace || !slices.Contains(p.HostNamespaces, t) {
			refused = append(refused, fmt.Sprintf("the host's %s namespace", t))
		}
	}
	return refused
}

func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

func (p Policy) bindAllowed(src string) bool {
	if !path.IsAbs(src) {
		return false
	}
	src = path.Clean(src)
	for _, allowed := range p.BindMounts {
		allowed = path.Clean(allowed)
		if src == allowed || strings.HasPrefix(src, strings.TrimSuffix(allowed, "/")+"/") {
			return true
		}
	}
	return false
}

// errPolicy is matched by callers that map a refusal to 403.
var errPolicy = errors.New("refused by policy")

func (e *PolicyError) Is(target error) bool { return target == errPolicy }
