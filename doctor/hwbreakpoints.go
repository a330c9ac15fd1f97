package doctor

// criuFaultNoBreakpoints is CRIU's fault-injection code that makes it stop a parasite on
// its final syscall with PTRACE_SYSCALL instead of a hardware breakpoint.
const criuFaultNoBreakpoints = "CRIU_FAULT=130"

// CRIUFaultEnv returns the environment CRIU needs on this host: CRIU_FAULT=130 where
// hardware breakpoints do not fire (without it `criu dump` hangs in
// parasite_stop_on_syscall), nil where they do. Give it to containerd, whose shims, runc
// and criu inherit it. The variable is harmless where breakpoints work (CRIU is only a
// little slower), so a caller may set it when this returns an error.
func CRIUFaultEnv() ([]string, error) {
	ok, err := HWBreakpointsWork()
	if err != nil {
		return nil, err
	}
	if ok {
		return nil, nil
	}
	return []string{criuFaultNoBreakpoints}, nil
}

func (r *Report) checkHWBreakpoints() {
	ok, err := HWBreakpointsWork()
	r.HWBreakpoints = ok
	r.Checks = append(r.Checks, hwBreakpointsCheck(ok, err))
}

// hwBreakpointsCheck turns the outcome of HWBreakpointsWork into a row.
func hwBreakpointsCheck(ok bool, err error) Check {
	row := Check{Name: "hardware breakpoints"}
	switch {
	case err != nil:
		row.Status, row.Detail = Warn, err.Error()
		row.Fix = "run CRIU with " + criuFaultNoBreakpoints + " to be safe (where breakpoints work it only slows CRIU a little)"
	case ok:
		row.Status, row.Detail = OK, "yes: a probe breakpoint fired, CRIU can stop its parasite with them"
	default:
		row.Status = Warn
		row.Detail = "no → CRIU must run with " + criuFaultNoBreakpoints + " (ftwin-migrate sets it for the daemons it starts)"
		row.Fix = "nothing for the daemons ftwin-migrate starts; give " + criuFaultNoBreakpoints +
			" to any containerd you start yourself (e.g. Environment= in its systemd unit), or `criu dump` hangs"
	}
	return row
}
