package transfer

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

// A CRIU image directory travels as one tar stream (files only, flat: CRIU writes no
// subdirectories), zstd-compressed. Its digest is the sha256 of the uncompressed tar, computed
// by both sides: the receiver's must equal the sender's before the image is used.

// DirRemote receives a directory stream.
type DirRemote interface {
	// PutDir streams a zstd-compressed tar from r and returns the compressed bytes sent and
	// the digest the receiver computed over the uncompressed tar.
	PutDir(ctx context.Context, r io.Reader) (wire int64, digest string, err error)
}

// DirStats says what sending a directory did.
type DirStats struct {
	Bytes     int64  `json:"bytes"`      // uncompressed tar
	WireBytes int64  `json:"wire_bytes"` // compressed
	Digest    string `json:"digest"`     // sha256 of the tar, hex
}

// PushDir streams directory dir to dst. It fails if the receiver's digest differs.
func PushDir(ctx context.Context, dir string, dst DirRemote) (DirStats, error) {
	var st DirStats
	pr, pw := io.Pipe()
	sum := sha256.New()
	counted := &countWriter{w: sum}
	go func() {
		enc, err := zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		err = writeFlatTar(io.MultiWriter(enc, counted), dir)
		if cerr := enc.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	}()
	wire, got, err := dst.PutDir(ctx, pr)
	pr.CloseWithError(errors.New("transfer: put ended"))
	st.WireBytes, st.Bytes, st.Digest = wire, counted.n, hex.EncodeToString(sum.Sum(nil))
	if err != nil {
		return st, fmt.Errorf("transfer: send %s: %w", dir, err)
	}
	if got != st.Digest {
		return st, fmt.Errorf("transfer: %s arrived with digest %s, sent %s", dir, got, st.Digest)
	}
	return st, nil
}

// ReceiveDir unpacks a stream sent by PushDir into dir (created) and returns the sha256 of the
// uncompressed tar. A stream that decompresses to more than limit bytes (limit > 0) is refused
// once it gets there.
func ReceiveDir(r io.Reader, dir string, limit int64) (string, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(MaxWindow))
	if err != nil {
		return "", fmt.Errorf("transfer: zstd: %w", err)
	}
	defer dec.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	sum := sha256.New()
	var in io.Reader = dec
	if limit > 0 {
		in = &limitedReader{r: dec, left: limit}
	}
	in = io.TeeReader(in, sum)
	if err := readFlatTar(in, dir); err != nil {
		return "", fmt.Errorf("transfer: receive into %s: %w", dir, err)
	}
	// Read what follows the tar's end-of-archive blocks, so the digest covers the whole stream.
	if _, err := io.Copy(io.Discard, in); err != nil {
		return "", fmt.Errorf("transfer: receive into %s: %w", dir, err)
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// writeFlatTar writes dir, which must hold regular files only (a CRIU image directory), as a
// tar stream.
func writeFlatTar(w io.Writer, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s/%s is not a regular file", dir, e.Name())
		}
	}
	tw := tar.NewWriter(w)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		return err
	}
	return tw.Close()
}

func readFlatTar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg || h.Name != filepath.Base(h.Name) || h.Name == ".." {
			return fmt.Errorf("unexpected entry %q in a CRIU image stream", h.Name)
		}
		f, err := os.OpenFile(filepath.Join(dir, h.Name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(h.Mode)&0o777)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// countWriter counts what passes through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// CompressedSize is how many bytes PushDir would send of directory dir: its flat tar through
// the same zstd level. It measures the compression of a CRIU image without sending it.
func CompressedSize(dir string) (int64, error) {
	wire := &countWriter{w: io.Discard}
	enc, err := zstd.NewWriter(wire, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return 0, err
	}
	err = writeFlatTar(enc, dir)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("transfer: compress %s: %w", dir, err)
	}
	return wire.n, nil
}

// ErrTooLarge is returned when a received stream decompresses to more than allowed.
var ErrTooLarge = errors.New("transfer: the stream decompresses to more than allowed")

// limitedReader fails with ErrTooLarge past left bytes.
type limitedReader struct {
	r    io.Reader
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, ErrTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, ErrTooLarge
	}
	return n, err
}
