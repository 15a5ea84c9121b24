//go:build benchpprof

package main

import (
	"net/http"
	"net/http/pprof"
	"os"
)

// Built only with -tags benchpprof (e2e/sipbench -profile): serves pprof on
// CALLPLANE_BENCH_PPROF, a loopback address, so a benchmark can profile the
// real call manager process. The product binary never has this listener.
func init() {
	addr := os.Getenv("CALLPLANE_BENCH_PPROF")
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go func() { _ = http.ListenAndServe(addr, mux) }()
}
