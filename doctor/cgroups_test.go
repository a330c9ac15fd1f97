package doctor

import "testing"

func TestCgroupCheck(t *testing.T) {
	for _, tc := range []struct {
		f    cgroupFacts
		want Status
	}{
		{cgroupFacts{unifiedRoot: true, v2Freezer: true}, OK},
		{cgroupFacts{unifiedRoot: true}, Fail},
		{cgroupFacts{v1Freezer: true, hybrid: true, v2Freezer: true}, OK},
		{cgroupFacts{v1Freezer: true}, OK},
		{cgroupFacts{}, Fail},
		{cgroupFacts{hybrid: true}, Fail},
	} {
		c := cgroupCheck(tc.f)
		if c.Status != tc.want || (c.Status != OK && c.Fix == "") || c.Detail == "" {
			t.Errorf("cgroupCheck(%+v) = %+v, want %v (with a fix when not OK)", tc.f, c, tc.want)
		}
	}
}
