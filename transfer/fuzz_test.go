package transfer

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadFlatTar: whatever a peer sends as a CRIU image stream, the receiver writes only
// regular files directly inside its directory, and nothing elsewhere.
func FuzzReadFlatTar(f *testing.F) {
	seed := func(entries ...*tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range entries {
			_ = tw.WriteHeader(h)
			if h.Typeflag == tar.TypeReg {
				_, _ = tw.Write(make([]byte, h.Size))
			}
		}
		_ = tw.Close()
		return b.Bytes()
	}
	f.Add(seed(&tar.Header{Name: "pages-1.img", Typeflag: tar.TypeReg, Size: 10, Mode: 0o600}, &tar.Header{Name: "inventory.img", Typeflag: tar.TypeReg, Size: 3, Mode: 0o600}))
	f.Add(seed(&tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Size: 1, Mode: 0o600}))
	f.Add(seed(&tar.Header{Name: "/etc/passwd", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}))
	f.Add(seed(&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, &tar.Header{Name: "link/x", Typeflag: tar.TypeReg, Size: 1}))
	f.Add(seed(&tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}))
	f.Add(seed(&tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}))
	f.Add(seed(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Size: 1}, &tar.Header{Name: "a", Typeflag: tar.TypeReg, Size: 1}))
	f.Add(seed(&tar.Header{Name: "suid", Typeflag: tar.TypeReg, Size: 1, Mode: 0o4755}))
	f.Add([]byte("not a tar at all"))
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "image")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		_ = readFlatTar(bytes.NewReader(data), dir)
		// Nothing beside the image directory...
		if es, _ := os.ReadDir(root); len(es) != 1 {
			t.Fatalf("%d entries beside the image directory", len(es)-1)
		}
		// ...and only plain files without setuid, setgid or sticky bits inside it.
		es, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			fi, err := os.Lstat(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if !fi.Mode().IsRegular() || fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
				t.Fatalf("%s has mode %v", e.Name(), fi.Mode())
			}
		}
	})
}
