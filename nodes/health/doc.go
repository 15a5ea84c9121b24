// Package health is Callplane's health checker: on the leader only, it
// probes every node each interval (an active probe of the service address
// plus the agent's heartbeat freshness), runs each node through the
// pending/up/suspect/down state machine with fail and recover thresholds
// and a flapping guard, and writes every health change in one fenced
// transaction together with its event, its alert (the outbox row the
// mailer in nodes/outbox sends) and, under the automatic failover policy,
// the move of the node's work.
//
// Its settings live in nodes/settings; Store adds what the portal reads of
// the checker beside them: its status and the disruption guard's, read
// from the domain through StatusDomain. Like the checker's own writes
// (nodes.CheckerTx), nothing here runs a query of its own.
package health
