package lab

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
)

func TestGARPFrame(t *testing.T) {
	n := ContainerNet{Addr: netip.MustParsePrefix("10.231.0.100/24"), MAC: macFor(netip.MustParseAddr("10.231.0.100"))}
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

func TestAllocateAddress(t *testing.T) {
	dir := t.TempDir()
	h := &Host{Name: "cloud", IP: "10.231.5.11", Dir: filepath.Join(dir, "lab", "hosts", "cloud"), lab: "lab"}
	a, err := h.allocateAddress("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.allocateAddress("b")
	if err != nil {
		t.Fatal(err)
	}
	if a.Addr.String() != "10.231.5.100/24" || b.Addr.String() != "10.231.5.101/24" || a.MAC.String() != "02:fa:0a:e7:05:64" {
		t.Fatalf("allocated %v (%v) and %v: want .100 and .101 of the host's /24, MACs from the address", a.Addr, a.MAC, b.Addr)
	}
	releaseAddress(h.labDir(), a)
	c, err := h.allocateAddress("c")
	if err != nil || c.Addr != a.Addr {
		t.Fatalf("after releasing %v got %v, %v: want it again", a.Addr, c.Addr, err)
	}
	back, own, err := ContainerNetFromLabels(c.Labels())
	if err != nil || !own || back.Addr != c.Addr || back.MAC.String() != c.MAC.String() {
		t.Fatalf("labels %v read back as %+v %v %v", c.Labels(), back, own, err)
	}
	if _, own, _ := ContainerNetFromLabels(map[string]string{"other": "x"}); own {
		t.Fatal("a container without the labels read as having an address of its own")
	}
	if _, _, err := ContainerNetFromLabels(map[string]string{LabelAddress: "nonsense", LabelMAC: "02:fa:00:00:00:01"}); err == nil || !strings.Contains(err.Error(), LabelAddress) {
		t.Fatalf("bad label: %v, want an error naming %s", err, LabelAddress)
	}
}
