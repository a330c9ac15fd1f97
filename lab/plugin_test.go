package lab

import (
	"path/filepath"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/ftwin-migrate/ftwin-migrate/plugin"
)

// TestPluginConfigNetwork: a plugin lab's hosts move own-address containers on the host's
// bridge, with the namespaces named as Host.Network names them (so the lab's tools find the
// plugin's), in the daemon's own network namespace; the section survives its TOML form and the
// plugin's strict decoding.
func TestPluginConfigNetwork(t *testing.T) {
	h := &Host{Name: "fog", IP: "10.231.5.12", Dir: filepath.Join(t.TempDir(), "lab", "hosts", "fog"), lab: "lab"}
	pc := h.PluginConfig("/pki")
	n := h.Network()
	if pc.Network.Bridge != n.Name || pc.Network.NetNSPrefix != n.NetNSPrefix || pc.Network.HostNetNS != "" {
		t.Fatalf("network section %+v; want bridge %s, prefix %s, containerd's network namespace", pc.Network, n.Name, n.NetNSPrefix)
	}
	text, err := pc.SectionTOML()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Plugins map[string]any `toml:"plugins"`
	}
	if err := toml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("%v:\n%s", err, text)
	}
	back, err := plugin.DecodeStrict(doc.Plugins[plugin.URI])
	if err != nil {
		t.Fatalf("%v:\n%s", err, text)
	}
	if back.Network != pc.Network {
		t.Errorf("network section read back as %+v, want %+v:\n%s", back.Network, pc.Network, text)
	}
}
