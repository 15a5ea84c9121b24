package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// step is one rate step's figures.
type step struct {
	rate     int
	calls    int
	failed   int
	p50, p99 float64 // setup time (INVITE to 200), ms
	cpu      float64 // proxy CPU seconds over the step
	dbCPU    float64 // its database's CPU seconds over the step
	retrans  int     // requests the caller sent again (T1 timer): lost or late answers
}

func (s step) cpuPer1000() float64 {
	if s.calls == 0 {
		return 0
	}
	return s.cpu / float64(s.calls) * 1000
}

// conc is the concurrent-calls figure.
type conc struct {
	peak   int
	failed int
}

// sippCaller runs the bench caller against addr and waits for it.
func (b *bench) sippCaller(name, addr string, extra ...string) (string, error) {
	out := filepath.Join(b.dir, "sipp", name)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	args := append([]string{"-sf", filepath.Join(b.repo, "e2e/sipbench/uac.xml"), addr, "-s", "service",
		"-i", "127.0.0.1", "-p", strconv.Itoa(freeUDP()), "-nostdin", "-recv_timeout", "30000",
		"-trace_stat", "-stf", filepath.Join(out, "stat.csv"), "-fd", "1", "-trace_err"}, extra...)
	cmd := exec.Command("sipp", args...)
	cmd.Dir = out
	log, err := os.Create(filepath.Join(out, "sipp.log"))
	if err != nil {
		return "", err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	err = cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		return out, err
	}
	return out, nil
}

// sippStep places rate calls a second for the step's length, each hung
// up as soon as it is answered.
func (b *bench) sippStep(name, addr string, rate int) (step, error) {
	return b.sippCallsFor(name, addr, rate, b.o.step)
}

// sippCallsFor places rate calls a second for d.
func (b *bench) sippCallsFor(name, addr string, rate int, d time.Duration) (step, error) {
	s := step{rate: rate}
	calls := rate * int(d.Seconds())
	out, err := b.sippCaller(fmt.Sprintf("%s-%d", name, rate), addr, "-r", strconv.Itoa(rate), "-m", strconv.Itoa(calls),
		"-d", "0", "-l", strconv.Itoa(max(rate*5, 100)), "-trace_rtt", "-rtt_freq", "1",
		"-timeout", strconv.Itoa(int(d.Seconds())+120)+"s")
	if err != nil {
		return s, err
	}
	stats, err := readStats(filepath.Join(out, "stat.csv"))
	if err != nil {
		return s, err
	}
	last := stats[len(stats)-1]
	s.calls, s.failed = last["SuccessfulCall(C)"]+last["FailedCall(C)"], last["FailedCall(C)"]
	s.retrans = last["Retransmissions(C)"]
	if s.calls < calls {
		s.failed += calls - s.calls // calls sipp never completed
	}
	rtts, err := readRTTs(out)
	if err != nil {
		return s, err
	}
	s.p50, s.p99 = percentile(rtts, 50), percentile(rtts, 99)
	return s, nil
}

// holdCalls builds up the concurrent calls, holds each for the hold
// time, and hangs them all up.
func (b *bench) holdCalls(p *proxy) conc {
	var c conc
	done := make(chan struct{})
	peakLive, before := 0, 0
	if p.live != nil {
		before = p.live()
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					peakLive = max(peakLive, p.live())
				}
			}
		}()
	}
	n := b.o.concurrent
	out, err := b.sippCaller(p.name+"-concurrent", p.addr, "-r", strconv.Itoa(b.o.concRate), "-m", strconv.Itoa(n),
		"-l", strconv.Itoa(n), "-d", strconv.Itoa(int(b.o.hold.Milliseconds())),
		"-timeout", strconv.Itoa(int(b.o.hold.Seconds())+n/b.o.concRate+180)+"s")
	close(done)
	if err != nil {
		c.failed = n
		return c
	}
	stats, err := readStats(filepath.Join(out, "stat.csv"))
	if err != nil || len(stats) == 0 {
		c.failed = n
		return c
	}
	for _, row := range stats {
		c.peak = max(c.peak, row["CurrentCall"])
	}
	last := stats[len(stats)-1]
	c.failed = last["FailedCall(C)"] + max(0, n-last["SuccessfulCall(C)"]-last["FailedCall(C)"])
	if p.live != nil {
		// The proxy's own count of live calls (durable rows) is the figure.
		c.peak = peakLive - before
	}
	return c
}

// readStats reads sipp's statistics file: one map per dump.
func readStats(path string) ([]map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var header []string
	var rows []map[string]int
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ";")
		if header == nil {
			header = fields
			continue
		}
		row := map[string]int{}
		for i, v := range fields {
			if i < len(header) {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					row[header[i]] = n
				}
			}
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("no statistics in %s", path)
	}
	return rows, sc.Err()
}

// readRTTs reads the setup times (ms) sipp traced with -trace_rtt.
func readRTTs(dir string) ([]float64, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*_rtt.csv"))
	var out []float64
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Split(line, ";")
			if len(f) < 2 {
				continue
			}
			if v, err := strconv.ParseFloat(strings.TrimSpace(f[1]), 64); err == nil {
				out = append(out, v)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no response times traced in %s", dir)
	}
	return out, nil
}

func percentile(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
