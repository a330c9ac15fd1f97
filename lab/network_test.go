package lab

import (
	"path/filepath"
	"strings"
	"testing"
)

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
	if a.Prefix.String() != "10.231.5.100/24" || b.Prefix.String() != "10.231.5.101/24" || a.MAC.String() != "02:fa:0a:e7:05:64" {
		t.Fatalf("allocated %v (%v) and %v: want .100 and .101 of the host's /24, MACs from the address", a.Prefix, a.MAC, b.Prefix)
	}
	releaseAddress(h.labDir(), a)
	c, err := h.allocateAddress("c")
	if err != nil || c.Prefix != a.Prefix {
		t.Fatalf("after releasing %v got %v, %v: want it again", a.Prefix, c.Prefix, err)
	}
	back, own, err := ContainerNetFromLabels(containerLabels(c))
	if err != nil || !own || back.Prefix != c.Prefix || back.MAC.String() != c.MAC.String() {
		t.Fatalf("labels %v read back as %+v %v %v", containerLabels(c), back, own, err)
	}
	if _, own, _ := ContainerNetFromLabels(map[string]string{"other": "x"}); own {
		t.Fatal("a container without the labels read as having an address of its own")
	}
	if _, _, err := ContainerNetFromLabels(map[string]string{LabelAddress: "nonsense", LabelMAC: "02:fa:00:00:00:01"}); err == nil || !strings.Contains(err.Error(), LabelAddress) {
		t.Fatalf("bad label: %v, want an error naming %s", err, LabelAddress)
	}
}
