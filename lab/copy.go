package lab

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
)

// CopyDir copies directory src of the machine to dst as one host would send it to another over
// the lab network: a tar stream over a plain TCP connection from host from to host to (like scp,
// without encryption or compression), so link throttling applies. It returns the bytes sent.
func CopyDir(ctx context.Context, from, to *Host, src, dst string) (int64, error) {
	wire, err := stream(ctx, from, to,
		func(w io.Writer) error { return tarDir(w, src) },
		func(r io.Reader) error { return untar(r, dst) })
	if err != nil {
		return wire, fmt.Errorf("lab: copy %s from %s to %s: %w", src, from.Name, to.Name, err)
	}
	return wire, nil
}

// CopyDirZstd copies directory src to dst from host from to host to as a careful admin would
// with `tar c | zstd -1 | nc`: one tar stream through zstd (its fastest level) over a plain TCP
// connection, leaving out the files skip names (paths relative to src, slash-separated).
// It returns the tar bytes before compression and the bytes that crossed the link.
func CopyDirZstd(ctx context.Context, from, to *Host, src, dst string, skip func(rel string) bool) (raw, wire int64, err error) {
	wire, err = stream(ctx, from, to,
		func(w io.Writer) error {
			enc, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest))
			if err != nil {
				return err
			}
			tw := &countWriter{w: enc}
			err = tarDirSkip(tw, src, skip)
			raw = tw.n
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
			return err
		},
		func(r io.Reader) error {
			dec, err := zstd.NewReader(r)
			if err != nil {
				return err
			}
			defer dec.Close()
			return untar(dec, dst)
		})
	if err != nil {
		return raw, wire, fmt.Errorf("lab: copy %s from %s to %s through zstd: %w", src, from.Name, to.Name, err)
	}
	return raw, wire, nil
}

// stream runs send on host from and receive on host to, over one plain TCP connection between
// them, and returns the bytes that crossed it.
func stream(ctx context.Context, from, to *Host, send func(io.Writer) error, receive func(io.Reader) error) (int64, error) {
	ln, err := to.Listen("tcp", net.JoinHostPort(to.IP, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	recv := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			recv <- err
			return
		}
		defer c.Close()
		recv <- receive(c)
	}()
	conn, err := from.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	cw := &countWriter{w: conn}
	err = send(cw)
	if cerr := conn.(*net.TCPConn).CloseWrite(); err == nil {
		err = cerr
	}
	if rerr := <-recv; err == nil {
		err = rerr
	}
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func tarDir(w io.Writer, dir string) error { return tarDirSkip(w, dir, nil) }

func tarDirSkip(w io.Writer, dir string, skip func(rel string) bool) error {
	tw := tar.NewWriter(w)
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		if skip != nil && fi.Mode().IsRegular() && skip(filepath.ToSlash(rel)) {
			return nil
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !filepath.IsLocal(h.Name) {
			return fmt.Errorf("tar entry %q leaves the directory", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
}

// MeasureBandwidth sends n bytes from host from to host to over TCP and returns bytes/second.
func MeasureBandwidth(ctx context.Context, from, to *Host, n int64) (float64, error) {
	ln, err := to.Listen("tcp", net.JoinHostPort(to.IP, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		k, _ := io.Copy(io.Discard, c)
		got <- k
	}()
	conn, err := from.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	start := time.Now()
	buf := make([]byte, 1<<20)
	var sent int64
	for sent < n {
		k, err := conn.Write(buf[:min(int64(len(buf)), n-sent)])
		sent += int64(k)
		if err != nil {
			conn.Close()
			return 0, err
		}
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	k := <-got
	el := time.Since(start)
	conn.Close()
	if k != n {
		return 0, fmt.Errorf("lab: bandwidth probe: %d of %d bytes arrived", k, n)
	}
	return float64(n) / el.Seconds(), nil
}
