package faults

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes/alert/smtptest"
)

type smtpMessage = smtptest.Received

// result is what one scenario measured.
type result struct {
	fault                  string
	falseDowns, falseMoves int
	lost, dup, stray       int
	gap                    float64 // longest time between health check rounds, seconds
	detectDuring           time.Duration
	detectAfter            time.Duration
	checkers               string // the one call manager running a checker after the fault
	notes                  []string
}

var (
	resultsMu sync.Mutex
	results   []result
)

func record(r result) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	results = append(results, r)
}

// secs shows a detection time, or that there was none.
func secs(d time.Duration) string {
	if d < 0 {
		return "not detected"
	}
	return fmt.Sprintf("%.1f", d.Seconds())
}

// printTable prints the table of the scenarios that ran, in Markdown.
func printTable(w io.Writer) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	fmt.Fprintln(w, "\nFault suite results")
	fmt.Fprintln(w, "| fault | false downs | false moves | lost alerts | duplicate alerts | stray alerts | checker gap (s) | node failed during: detected after (s) | node failed after: detected after (s) | checker after |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		checkers := r.checkers
		if checkers == "" {
			checkers = "none"
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %.1f | %s | %s | %s |\n", r.fault, r.falseDowns, r.falseMoves,
			r.lost, r.dup, r.stray, r.gap, secs(r.detectDuring), secs(r.detectAfter), checkers)
	}
	for _, r := range results {
		if len(r.notes) > 0 {
			fmt.Fprintf(w, "- %s: %s\n", r.fault, strings.Join(r.notes, "; "))
		}
	}
}
