package doctor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// version is a release number such as 4.2.1; missing components count as 0.
type version [3]int

// parseVersion reads the dotted number that s starts with, after an optional "v":
// "1.7.24~ds1" and "v1.7.24" are both 1.7.24, "6.18.44-fc-v669" is 6.18.44.
func parseVersion(s string) (version, error) {
	num := strings.TrimPrefix(s, "v")
	if end := strings.IndexFunc(num, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); end >= 0 {
		num = num[:end]
	}
	parts := strings.Split(strings.TrimSuffix(num, "."), ".")
	if len(parts) < 2 || len(parts) > len(version{}) {
		return version{}, fmt.Errorf("%q is not a release number", s)
	}
	var v version
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return version{}, fmt.Errorf("%q is not a release number: %w", s, err)
		}
		v[i] = n
	}
	return v, nil
}

func (v version) less(w version) bool { return slices.Compare(v[:], w[:]) < 0 }

func (v version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// parseCRIUVersion returns the release from `criu --version` output, whose first line is
// "Version: 4.2.1" (a git build adds a "GitID:" line).
func parseCRIUVersion(out string) (string, error) {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			if v = strings.TrimSpace(v); v != "" {
				return v, nil
			}
		}
	}
	return "", fmt.Errorf("no version in `criu --version` output %q", strings.TrimSpace(out))
}

// parseContainerdVersion returns the release from `containerd --version` output:
// "containerd github.com/containerd/containerd v1.7.29 <revision>" upstream,
// "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1" on Debian.
func parseContainerdVersion(out string) (string, error) {
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != "containerd" || !strings.HasPrefix(f[1], "github.com/containerd/containerd") {
		return "", fmt.Errorf("no version in `containerd --version` output %q", strings.TrimSpace(out))
	}
	return strings.TrimPrefix(f[2], "v"), nil
}

// parseRuncVersion returns the release from `runc --version` output, whose first line is
// "runc version 1.1.15".
func parseRuncVersion(out string) (string, error) {
	first, _, _ := strings.Cut(out, "\n")
	v, ok := strings.CutPrefix(strings.TrimSpace(first), "runc version ")
	if !ok || strings.TrimSpace(v) == "" {
		return "", fmt.Errorf("no version in `runc --version` output %q", strings.TrimSpace(out))
	}
	return strings.TrimSpace(v), nil
}
