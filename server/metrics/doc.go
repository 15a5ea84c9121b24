// Package metrics holds the call manager's Prometheus instruments: the
// counters and histograms other packages increment where things happen
// (placements, moves, probes, mails, HTTP requests, SIP calls), registered
// once in Registry. Gauges that describe the database (nodes, work,
// alerts) are read per scrape by a collector in package server, so they
// are right whichever instance is scraped.
//
// Labels are bounded: kinds, states, causes and outcomes from fixed sets,
// route patterns rather than paths, node names at most; never a work ref.
// A package that wants its own series declares them here, next to the
// others, and increments them. (The SIP front door keeps its own
// counters; the server's collector exposes them as callplane_sip_*.)
package metrics
