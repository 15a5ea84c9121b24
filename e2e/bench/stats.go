package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// procCPU returns the user+system CPU time a process has used.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // CLK_TCK is 100 on Linux
}

// procMem returns VmRSS and VmHWM in bytes.
func procMem(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			hwm = v * 1024
		}
	}
	return rss, hwm
}

// figure is one printed line: name, measured value, target, verdict.
type figure struct {
	Name, Value, Target, Verdict, Note string
}

var figures []figure

func report(name, value, target string, pass bool, note string) {
	v := "PASS"
	if !pass {
		v = "MISS"
	}
	f := figure{name, value, target, v, note}
	figures = append(figures, f)
	fmt.Println(f.line())
}

// reportInfo prints a figure that has no target of its own (a comparison).
func reportInfo(name, value, note string) {
	f := figure{name, value, "-", "INFO", note}
	figures = append(figures, f)
	fmt.Println(f.line())
}

func (f figure) line() string {
	s := fmt.Sprintf("%-44s %-28s target %-22s %s", f.Name, f.Value, f.Target, f.Verdict)
	if f.Note != "" {
		s += "  (" + f.Note + ")"
	}
	return s
}

// cpuSplit reads the CPU time used so far by the load driver (this
// process), the call manager and all Postgres processes.
func cpuSplit(cmPID int) (driver, cm, pg time.Duration) {
	driver = procCPU(os.Getpid())
	cm = procCPU(cmPID)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) == "postgres" {
			pg += procCPU(pid)
		}
	}
	return
}

// cpuShares returns a function that, called at the end of a phase, says
// how many cores each party used during it.
func cpuShares(cmPID int) func() string {
	d0, c0, p0 := cpuSplit(cmPID)
	t0 := time.Now()
	return func() string {
		d1, c1, p1 := cpuSplit(cmPID)
		el := time.Since(t0).Seconds()
		f := func(a, b time.Duration) float64 { return (b - a).Seconds() / el }
		return fmt.Sprintf("cores used: call manager %.2f, postgres %.2f, load driver+agents %.2f", f(c0, c1), f(p0, p1), f(d0, d1))
	}
}
