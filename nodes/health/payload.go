package health

import (
	"encoding/json"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/alert"
)

// Alert types in the outbox. Capacity alerts are queued by the nodes
// package (payload {"work_kind", "unplaced"}).
const (
	AlertHealth     = "health"
	AlertCapacity   = "capacity"
	AlertDisruption = "disruption"
	AlertHook       = nodes.AlertHook
)

// Pseudo health states of agent alerts (AlertPayload.To): the service
// answers its probe but its agent went quiet, or came back.
const (
	ToAgentLost = "agent lost"
	ToAgentBack = "agent back"
)

// AlertPayload is the JSON payload of a health alert in the outbox: all
// the mailer needs to write the email, as it was when the change happened.
type AlertPayload struct {
	Node        string    `json:"node"`
	Kind        string    `json:"kind"`
	Address     string    `json:"address"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	At          time.Time `json:"at"`
	Since       time.Time `json:"since,omitzero"`
	Reason      string    `json:"reason"`
	Policy      string    `json:"policy"`
	WorkOutcome string    `json:"work_outcome"`
	Maintenance bool      `json:"maintenance,omitempty"`
	Reminder    bool      `json:"reminder,omitempty"`
	AckedBy     string    `json:"acked_by,omitempty"`
	AckNote     string    `json:"ack_note,omitempty"`
	// NoRoom: manual failover, and the other nodes lack the room to take
	// the node's work if it is disabled.
	NoRoom bool `json:"no_room,omitempty"`
}

// Change converts the payload for alert.Compose.
func (p AlertPayload) Change() alert.Change {
	return alert.Change{
		Node: p.Node, Kind: p.Kind, Address: p.Address, From: p.From, To: p.To,
		At: p.At, Since: p.Since, Reason: p.Reason, Policy: p.Policy,
		WorkOutcome: p.WorkOutcome, Maintenance: p.Maintenance, NoRoom: p.NoRoom,
		Reminder: p.Reminder, AckedBy: p.AckedBy, AckNote: p.AckNote,
	}
}

// ParseAlertPayload decodes a health alert's payload.
func ParseAlertPayload(b []byte) (AlertPayload, error) {
	var p AlertPayload
	err := json.Unmarshal(b, &p)
	return p, err
}

// CapacityPayload is the payload of a capacity alert.
type CapacityPayload struct {
	WorkKind string `json:"work_kind"`
	Unplaced int    `json:"unplaced"`
}
