// Package agentproto is the wire protocol between node agents and the call
// managers (DESIGN.md, "Agent API"), written once: the routes, the query
// parameters, the JSON bodies of enrolment, heartbeat, the assignment
// long-poll and acks, the assignment states an agent acks, the heartbeat
// interval, and the CA pin that the agent checks the server's key against.
//
// The call manager (server) serves it, the node agent (nodes/agent) and the
// benchmark agents (e2e/bench) speak it, and nodes uses its types for the
// desired set it hands out and the acks and running sets it takes in. It
// imports nothing of Callplane, so every side can depend on it.
package agentproto
