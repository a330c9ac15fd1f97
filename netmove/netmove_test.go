package netmove

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
)

// Bridge is both sides of a migration.
var (
	_ agent.Network         = Bridge{}
	_ migrate.SourceNetwork = Bridge{}
)

func TestGARPFrame(t *testing.T) {
	n := Address{Prefix: netip.MustParsePrefix("10.231.0.100/24"), MAC: MACFor(netip.MustParseAddr("10.231.0.100"))}
	f := garpFrame(n)
	if len(f) != 42 {
		t.Fatalf("frame of %d bytes, want 42", len(f))
	}
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xfa, 10, 231, 0, 100, 0x08, 0x06, // Ethernet: broadcast, from the MAC, ARP
		0, 1, 0x08, 0x00, 6, 4, 0, 1, // Ethernet/IPv4, request
		0x02, 0xfa, 10, 231, 0, 100, 10, 231, 0, 100, // sender: the MAC and the address
		0, 0, 0, 0, 0, 0, 10, 231, 0, 100, // target: the address itself (gratuitous)
	}
	if !bytes.Equal(f, want) {
		t.Fatalf("frame\n% x\nwant\n% x", f, want)
	}
}

func TestParseAddress(t *testing.T) {
	n, err := ParseAddress(agent.ContainerAddress{IP: "192.168.1.100/24", MAC: "02:fa:c0:a8:01:64"})
	if err != nil || n.Prefix.String() != "192.168.1.100/24" || n.MAC.String() != "02:fa:c0:a8:01:64" || n.Agent().IP != "192.168.1.100/24" {
		t.Fatalf("ParseAddress: %+v %v", n, err)
	}
	for _, bad := range []agent.ContainerAddress{{IP: "192.168.1.100", MAC: "02:fa:c0:a8:01:64"}, {IP: "192.168.1.100/24", MAC: "nonsense"}} {
		if _, err := ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%+v) accepted", bad)
		}
	}
}

func TestBridgeNames(t *testing.T) {
	b := Bridge{Name: "br0"}
	if b.NetNS("app") != "ftwin-app" || b.NetNSPath("app") != "/run/netns/ftwin-app" {
		t.Errorf("default names: %s %s", b.NetNS("app"), b.NetNSPath("app"))
	}
	if v := b.veth("app"); len(v) > 15 || !strings.HasPrefix(v, "ftc") || v == (Bridge{Name: "br0", NetNSPrefix: "x-"}).veth("app") {
		t.Errorf("veth %q: want a name of at most 15 bytes, different per namespace", v)
	}
	if _, err := (Bridge{}).Attach(context.Background(), "app", Address{}, false); err == nil || !strings.Contains(err.Error(), "no bridge") {
		t.Errorf("a Bridge without a name attached: %v", err)
	}
}
