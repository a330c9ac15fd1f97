package plugin

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/identifiers"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pelletier/go-toml/v2"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
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
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("plugin %s: bad configuration: %w", URI, errors.Join(errs...))
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
			return c, fmt.Errorf("plugin %s: bad configuration: unknown key(s) %s (known: host, pki, work_dir, receive.listen, receive.session_timeout, receive.heartbeat_timeout, receive.cgroup_parent, receive.log_dir, receive.namespaces, receive.allow_host_namespaces, receive.allow_bind_mounts, receive.allow_capabilities, receive.allow_devices)", URI, strings.Join(keys, ", "))
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
