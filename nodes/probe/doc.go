// Package probe actively checks that a worker node's service answers, and serves the
// endpoint such a check talks to when no real service does.
//
// The call manager's health checker holds one [Prober] for all nodes and calls
// [Prober.Probe] for each node every interval: media, ivr and queue nodes get a SIP
// OPTIONS request (sipgo), meeting nodes a WebRTC data-channel echo (pion), and im nodes a
// TCP connect. Every probe runs under its own deadline, so a dead peer (a UDP peer never
// answers) costs at most the configured timeout, and a misbehaving peer is a failed probe,
// never a crash.
//
// The node agent uses [NewEndpoint] for `nodeagent run --probe-listen ADDR`: a SIP UAS that
// answers OPTIONS, an HTTP endpoint that answers a WebRTC offer with an echoing peer, or a
// TCP listener, depending on the node kind.
//
// The address parsers ([ParseSIPAddress], [ParseWebRTCAddress], [ParseTCPAddress] and
// [ValidateAddress]) define the service address formats of DESIGN.md, and the node registry
// uses them to validate addresses before storing them.
package probe
