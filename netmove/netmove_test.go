package netmove

import (
	"bytes"
	"context"
	"errors"
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

// TestReadThroughDaemon: beside a containerd in a mount namespace of its own (DaemonPid), the
// containers' namespaces are read through the daemon's root, where every one of the host's
// is mounted (those containerd's plugin made too); otherwise by name in the caller's.
func TestReadThroughDaemon(t *testing.T) {
	ctx := context.Background()
	own := Bridge{Name: "br0", NetNSPrefix: "ftl-lab-fog."}
	if p, err := own.readPath("app"); err != nil || p != "/run/netns/ftl-lab-fog.app" {
		t.Errorf("own mount namespace: %s, %v", p, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ip", "-j", "addr"}, "ip -n ftl-lab-fog.app -j addr"},
		{[]string{"ss", "-Htn"}, "ip netns exec ftl-lab-fog.app ss -Htn"},
	} {
		cmd, err := own.inNetNS(ctx, "app", tc.args...)
		if err != nil || strings.Join(cmd.Args, " ") != tc.want {
			t.Errorf("own mount namespace: %v, %v; want %s", cmd.Args, err, tc.want)
		}
	}
	beside := own
	beside.DaemonPid = func() (int, error) { return 4242, nil }
	if p, err := beside.readPath("app"); err != nil || p != "/proc/4242/root/run/netns/ftl-lab-fog.app" {
		t.Errorf("beside a daemon: %s, %v", p, err)
	}
	cmd, err := beside.inNetNS(ctx, "app", "ss", "-Htn")
	if want := "nsenter --net=/proc/4242/root/run/netns/ftl-lab-fog.app -- ss -Htn"; err != nil || strings.Join(cmd.Args, " ") != want {
		t.Errorf("beside a daemon: %v, %v; want %s", cmd.Args, err, want)
	}
	beside.DaemonPid = func() (int, error) { return 0, errors.New("no daemon") }
	if _, err := beside.Read("app"); err == nil || !strings.Contains(err.Error(), "no daemon") {
		t.Errorf("Read without the daemon: %v", err)
	}
}
