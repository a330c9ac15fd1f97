package plugin

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/identifiers"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pelletier/go-toml/v2"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/netmove"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
)

// Config is the plugin's section of containerd's config.toml:
//
//	[plugins."io.containerd.grpc.v1.ftwin-migrate"]
//	  host = "fog"                      # this node's name in the PKI (default: the hostname)
//	  pki = "/etc/ftwin-migrate/pki"    # ca.crt, HOST.crt, HOST.key (ftwin-migrate certs init)
//	  work_dir = ""                     # default: the plugin's directory under containerd's root
//	  [plugins."io.containerd.grpc.v1.ftwin-migrate".receive]
//	    listen = "10.0.0.2:7443"        # serve the receive endpoint here (mTLS); empty: do not receive
//	    allow_host_namespaces = ["network"]
//	  [plugins."io.containerd.grpc.v1.ftwin-migrate".network]
//	    bridge = "br0"                  # containers' own addresses move on this bridge; empty: no addresses move
//	    host_netns = ""                 # the bridge's network namespace under /run/netns (default: containerd's)
//	    netns_prefix = "ftwin-"         # containers' namespaces are /run/netns/PREFIX+ID
//
// The zero values are the defaults; Validate refuses what cannot work, naming the key.
type Config struct {
	// Host is this node's name in the PKI: its certificate is HOST.crt. Default: the hostname.
	Host string `toml:"host"`
	// PKI is the directory of the CA certificate and this node's certificate and key.
	// Default /etc/ftwin-migrate/pki.
	PKI string `toml:"pki"`
	// WorkDir holds the dumps' CRIU work directories and the receive role's files. Default:
	// the plugin's directory under containerd's root (ROOT/io.containerd.grpc.v1.ftwin-migrate).
	WorkDir string `toml:"work_dir"`
	// Receive configures the receive role: the agent's endpoint, served over mutual TLS to
	// the other nodes. Off when Listen is empty.
	Receive ReceiveConfig `toml:"receive"`
	// Network moves containers' addresses of their own with them (package netmove): off when
	// Network.Bridge is empty.
	Network NetworkConfig `toml:"network"`
}

// NetworkConfig is how containers that have an address of their own on a network the nodes
// share move (package netmove; the flag --bridge of `ftwin-migrate migrate` and `receive`): a
// container whose network namespace is PREFIX+ID under /run/netns, with eth0 and a veth to the
// bridge, moves with its address and MAC, and its established TCP connections carry on. The
// same keys serve both sides: migrating out (migrate.Options.Network: the address is taken off
// this node's network before the dump, put back on a rollback, its namespace removed at the
// commit) and the receive role (agent.Config.Network: the namespace is recreated here before
// the restore, its link brought up and announced with gratuitous ARPs after it). The bridge's
// existence is checked when a container is moved in, not at load: the error then names it.
type NetworkConfig struct {
	// Bridge is the Linux bridge the containers' links join: one on the network the nodes
	// share (its uplink a port of it), the same name on every node. Empty (the default): the
	// plugin moves no addresses: containers are taken to be on their node's network, a
	// container with an address of its own cannot move through it, and the receive role
	// refuses one whose source moved its address.
	Bridge string `toml:"bridge"`
	// HostNetNS is the name under /run/netns of the network namespace the bridge is in.
	// Default: containerd's own network namespace (a real host's).
	HostNetNS string `toml:"host_netns"`
	// NetNSPrefix names the containers' network namespaces: /run/netns/PREFIX+ID, ID the
	// container's id. Default "ftwin-", as `ftwin-migrate net attach` names them.
	NetNSPrefix string `toml:"netns_prefix"`
}

// ReceiveConfig is the receive role: the options of `ftwin-migrate receive`.
type ReceiveConfig struct {
	// Listen is the host:port the endpoint serves on; empty: this node does not receive.
	Listen string `toml:"listen"`
	// SessionTimeout aborts a migration session idle this long. Default 2m.
	SessionTimeout Duration `toml:"session_timeout"`
	// HeartbeatTimeout removes a restored, uncommitted copy whose migrator went silent this
	// long. Default 15s.
	HeartbeatTimeout Duration `toml:"heartbeat_timeout"`
	// CgroupParent puts restored containers at PARENT/NAMESPACE/ID (default: the source's path).
	CgroupParent string `toml:"cgroup_parent"`
	// LogDir, when set, is where restored containers' output goes: LOG_DIR/ID.log. Default:
	// WORK_DIR/receive/logs/NAMESPACE-ID.log.
	LogDir string `toml:"log_dir"`
	// Namespaces are the containerd namespaces restored into and answered about (empty: any).
	Namespaces []string `toml:"namespaces"`
	// AllowHostNamespaces, AllowBindMounts, AllowCapabilities and AllowDevices are the policy
	// for restored containers' specs (agent.Policy; the flags --allow-* of receive).
	AllowHostNamespaces []string `toml:"allow_host_namespaces"`
	AllowBindMounts     []string `toml:"allow_bind_mounts"`
	AllowCapabilities   []string `toml:"allow_capabilities"`
	AllowDevices        bool     `toml:"allow_devices"`
}

// Duration is a time.Duration written as a string in TOML ("2m", "15s").
type Duration time.Duration

// UnmarshalText reads a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (want e.g. \"2m\" or \"15s\"): %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// DefaultPKI is where the PKI is looked for when Config.PKI is empty.
const DefaultPKI = "/etc/ftwin-migrate/pki"

// withDefaults returns c with its defaults filled in; root is the plugin's directory under
// containerd's root.
func (c Config) withDefaults(root string) Config {
	if c.Host == "" {
		c.Host, _ = os.Hostname()
	}
	if c.PKI == "" {
		c.PKI = DefaultPKI
	}
	if c.WorkDir == "" {
		c.WorkDir = root
	}
	return c
}

// Validate refuses a configuration the plugin cannot serve with, naming the key at fault and
// what it wants. It reads the PKI (this node's certificate and key, the CA's certificate).
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.WorkDir != "" && !filepath.IsAbs(c.WorkDir) {
		bad("work_dir", "%q: want an absolute path", c.WorkDir)
	}
	if _, err := pki.ServerConfig(c.PKI, c.Host); err != nil {
		bad("pki", "%s with host %q: %v (create it with `ftwin-migrate certs init --dir %s --host %s`)", c.PKI, c.Host, err, c.PKI, c.Host)
	}
	if _, err := c.Receive.policy(); err != nil {
		errs = append(errs, err)
	}
	r := c.Receive
	if r.Listen != "" {
		if _, port, err := net.SplitHostPort(r.Listen); err != nil || port == "" {
			bad("receive.listen", "%q: want host:port, e.g. \"10.0.0.2:7443\" or \":7443\"", r.Listen)
		}
	}
	if r.SessionTimeout < 0 {
		bad("receive.session_timeout", "%v: want a positive duration", time.Duration(r.SessionTimeout))
	}
	if r.HeartbeatTimeout < 0 {
		bad("receive.heartbeat_timeout", "%v: want a positive duration", time.Duration(r.HeartbeatTimeout))
	}
	if r.CgroupParent != "" && !path.IsAbs(r.CgroupParent) {
		bad("receive.cgroup_parent", "%q: want an absolute cgroup path", r.CgroupParent)
	}
	if r.LogDir != "" && !filepath.IsAbs(r.LogDir) {
		bad("receive.log_dir", "%q: want an absolute path", r.LogDir)
	}
	for _, ns := range r.Namespaces {
		if err := identifiers.Validate(ns); err != nil {
			bad("receive.namespaces", "%q: %v", ns, err)
		}
	}
	errs = append(errs, c.Network.validate()...)
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("plugin %s: bad configuration: %w", URI, errors.Join(errs...))
}

// validate refuses a network section that cannot work, naming the key.
func (n NetworkConfig) validate() []error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("network.%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if n.Bridge == "" {
		for _, k := range []struct {
			key string
			set bool
		}{{"host_netns", n.HostNetNS != ""}, {"netns_prefix", n.NetNSPrefix != ""}} {
			if k.set {
				bad(k.key, "set without network.bridge, where it does nothing: name the bridge containers' links join, or leave %s out", k.key)
			}
		}
		return errs
	}
	if !validIfName(n.Bridge) {
		bad("bridge", "%q: want a Linux interface name (1 to 15 bytes, no '/', ':' or white space)", n.Bridge)
	}
	if n.HostNetNS != "" && !validNetNSName(n.HostNetNS) {
		bad("host_netns", "%q: want the name of a network namespace under /run/netns (no '/' or white space), or none for containerd's own", n.HostNetNS)
	}
	if n.NetNSPrefix != "" && (!validNetNSName(n.NetNSPrefix) || len(n.NetNSPrefix) > maxNetNSPrefix) {
		bad("netns_prefix", "%q: want at most %d bytes with no '/' or white space (a namespace's name is PREFIX+ID, a file name of /run/netns)", n.NetNSPrefix, maxNetNSPrefix)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		bad("bridge", "moving addresses runs ip(8), which is not on containerd's PATH (%v): install iproute2", err)
	}
	return errs
}

// maxNetNSPrefix leaves room for the longest container id (76 bytes) in a 255-byte file name.
const maxNetNSPrefix = 255 - 76

// validIfName is the kernel's rule for an interface name (dev_valid_name).
func validIfName(s string) bool {
	return len(s) > 0 && len(s) < 16 && s != "." && s != ".." && !strings.ContainsAny(s, "/: \t\n\r\v\f")
}

// validNetNSName is a name ip-netns(8) takes, without white space.
func validNetNSName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/ \t\n\r\v\f\x00")
}

// bridge is the netmove side the section describes (Bridge set). DaemonPid stays nil: the
// plugin is containerd, so the namespaces it makes are mounted in containerd's mount namespace,
// where runc looks, and it reads them there. That holds in the lab too, whose daemons run in
// mount namespaces of their own: the lab's tools, beside the daemon, read a host's namespaces
// through the daemon's mount namespace (lab.Host.Network sets DaemonPid), where all of them
// are mounted, whoever made them.
func (n NetworkConfig) bridge() netmove.Bridge {
	return netmove.Bridge{Name: n.Bridge, HostNetNS: n.HostNetNS, NetNSPrefix: n.NetNSPrefix}
}

// policy is the agent policy the receive section describes.
func (r ReceiveConfig) policy() (agent.Policy, error) {
	p := agent.Policy{BindMounts: r.AllowBindMounts, Devices: r.AllowDevices}
	var errs []error
	for _, ns := range r.AllowHostNamespaces {
		switch t := specs.LinuxNamespaceType(ns); t {
		case specs.NetworkNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace:
			p.HostNamespaces = append(p.HostNamespaces, t)
		default:
			errs = append(errs, fmt.Errorf("receive.allow_host_namespaces: %q: want network, pid, ipc or uts (a restored container always has a mount namespace of its own)", ns))
		}
	}
	for _, b := range r.AllowBindMounts {
		if !path.IsAbs(b) {
			errs = append(errs, fmt.Errorf("receive.allow_bind_mounts: %q: want an absolute host path", b))
		}
	}
	for _, c := range r.AllowCapabilities {
		if !strings.HasPrefix(c, "CAP_") || strings.ToUpper(c) != c {
			errs = append(errs, fmt.Errorf("receive.allow_capabilities: %q: want a capability name such as CAP_NET_ADMIN", c))
		} else {
			p.Capabilities = append(p.Capabilities, c)
		}
	}
	return p, errors.Join(errs...)
}

// DecodeStrict reads the plugin's section from its TOML form, refusing keys the plugin does not
// know (containerd itself only warns of those, and a misspelt key would silently be a default).
func DecodeStrict(section any) (Config, error) {
	var c Config
	if section == nil {
		return c, nil
	}
	b, err := toml.Marshal(section)
	if err != nil {
		return c, fmt.Errorf("plugin %s: re-encode its configuration: %w", URI, err)
	}
	if err := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields().Decode(&c); err != nil {
		var serr *toml.StrictMissingError
		if errors.As(err, &serr) {
			var keys []string
			for _, e := range serr.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return c, fmt.Errorf("plugin %s: bad configuration: unknown key(s) %s (known: host, pki, work_dir, receive.listen, receive.session_timeout, receive.heartbeat_timeout, receive.cgroup_parent, receive.log_dir, receive.namespaces, receive.allow_host_namespaces, receive.allow_bind_mounts, receive.allow_capabilities, receive.allow_devices, network.bridge, network.host_netns, network.netns_prefix)", URI, strings.Join(keys, ", "))
		}
		var derr *toml.DecodeError
		if errors.As(err, &derr) && len(derr.Key()) > 0 {
			return c, fmt.Errorf("plugin %s: bad configuration: %s: %w", URI, strings.Join(derr.Key(), "."), err)
		}
		return c, fmt.Errorf("plugin %s: bad configuration: %w", URI, err)
	}
	return c, nil
}

// SectionTOML is c as the plugin's section of containerd's config.toml, to append to one.
func (c Config) SectionTOML() (string, error) {
	b, err := toml.Marshal(map[string]any{"plugins": map[string]any{URI: c}})
	if err != nil {
		return "", fmt.Errorf("plugin %s: encode its configuration: %w", URI, err)
	}
	return "\n" + string(b), nil
}
