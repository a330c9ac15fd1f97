package kafkahooks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzServer: whatever request reaches the hook socket, the server answers with a status of
// the protocol, a JSON body and its version header, and never panics.
func FuzzServer(f *testing.F) {
	for _, s := range [][3]string{
		{"POST", "/v1/prepare", "1"}, {"POST", "/v1/resume", "1"}, {"POST", "/v1/abort", "1"},
		{"GET", "/v1/status", "1"}, {"GET", "/v1/prepare", "1"}, {"POST", "/v1/../etc", "1"},
		{"DELETE", "/", "7"}, {"POST", "/v1/prepare", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	h := newHandler(newFake(), nil)
	f.Fuzz(func(t *testing.T, method, path, version string) {
		req, err := http.NewRequest(method, "http://ftwin-hook/", http.NoBody)
		if err != nil {
			return
		}
		req.URL.Path = path
		req.Header.Set(HeaderVersion, version)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400, 404, 405, 409, 500, 504:
		default:
			t.Fatalf("%s %q: status %d", method, path, rec.Code)
		}
		if rec.Header().Get(HeaderVersion) == "" {
			t.Fatalf("%s %q: no version header", method, path)
		}
		if rec.Code != 200 && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %q: error body %q is not JSON", method, path, rec.Body)
		}
	})
}

// rawTransport answers every request with the bytes of one HTTP response.
type rawTransport struct{ resp []byte }

func (r rawTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return http.ReadResponse(bufio.NewReader(bytes.NewReader(r.resp)), req)
}

// FuzzClient: whatever a hook answers, the client returns a result or an error, never panics,
// and never reports a boundary of another protocol version.
func FuzzClient(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n{\"protocol\":1,\"group\":\"g\",\"offsets\":{\"sensors\":{\"0\":12}}}    "))
	f.Add([]byte("HTTP/1.1 409 Conflict\r\n\r\n{\"error\":\"not prepared\"}"))
	f.Add([]byte("HTTP/1.1 200 OK\r\n\r\n{\"protocol\":2}"))
	f.Add([]byte("HTTP/1.1 200 OK\r\n\r\n{\"offsets\":{\"sensors\":{\"x\":1}}}"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, resp []byte) {
		c := NewClient(rawTransport{resp}, "fuzz")
		if b, err := c.Prepare(context.Background()); err == nil && (b.Protocol < MinVersion || b.Protocol > Version) {
			t.Fatalf("prepare accepted protocol %d", b.Protocol)
		}
		_, _ = c.Resume(context.Background())
		if s, err := c.Status(context.Background()); err == nil && (s.Protocol < MinVersion || s.Protocol > Version) {
			t.Fatalf("status accepted protocol %d", s.Protocol)
		}
		_ = c.Abort(context.Background())
		_, _ = c.Release(context.Background())
		_, _ = c.Shadow(context.Background())
		if a, err := c.Advance(context.Background(), Offsets{"sensors": {0: 1}}); err == nil && a.Protocol != 2 {
			t.Fatalf("advance accepted protocol %d", a.Protocol)
		}
	})
}
