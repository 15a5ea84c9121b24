// Package nodes is the cluster domain of Callplane: the node registry,
// enrolment with one-time join tokens, node credentials, work placement and
// moves. It knows nothing of HTTP; the portal (web) and the APIs (server)
// call its Service. Subpackages hold the health checker (health), the
// probes (probe), alert emails (alert) and the node agent (agent).
package nodes
