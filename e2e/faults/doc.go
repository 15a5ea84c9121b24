// Package faults is Callplane's fault suite (make faults): real callmanager
// and nodeagent processes, a real Postgres and SMTP sink, and faults
// injected by a real TCP fault proxy (toxiproxy, e2e/faultproxy) between
// the parts and by signals. Each scenario checks what an operator would:
// no healthy node marked down, no work moved off a healthy node, no alert
// but an optional control-plane notice, exactly one health checker after
// the fault, and a node that really fails during and after the fault
// detected and alerted once. The suite prints a table of what it measured.
//
// FAULTS_LONG=1 adds the slower scenarios (see scenarios in faults_test.go).
package faults
