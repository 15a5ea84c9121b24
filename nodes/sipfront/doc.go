// Package sipfront is the call manager's SIP front door: a stateful SIP
// proxy (RFC 3261 section 16, on emiago/sipgo) with the semantics of
// Kamailio's dispatcher module on top of Callplane's placement and health.
//
// An initial INVITE becomes a "call" work item placed on the least-loaded
// eligible media node and is forwarded there in a client transaction, with
// Via, Record-Route and Max-Forwards handled as a proxy must. A 408, a 5xx,
// a transport error or no provisional response within the try timeout
// ends that placement and tries the next node (ds_next_dst), up to the
// sip_tries setting; then the caller gets 503 with Retry-After.
//
// In-dialog requests follow the route set. The dialog-to-node mapping is
// the call's row in Postgres, not memory, so any instance sharing the
// database routes them, and a call whose work moved to another node (its
// node failed) is routed to the node that holds it now. A BYE's 2xx, a
// final non-2xx to the INVITE, a CANCEL or the maximum call duration end
// the work.
//
// The package reaches the cluster through the small Calls interface it
// declares; nodes.Service implements it.
package sipfront
