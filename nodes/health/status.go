package health

import (
	"context"
	"time"

	"github.com/callplane/callplane/nodes"
)

// StatusDomain is what Store.Status needs of the domain
// (nodes.Service implements it): the checker's status row with the
// disruption guard. (An administrator confirms a disruption through the
// domain too: nodes.Service.ConfirmDisruption.)
type StatusDomain interface {
	CheckerStatus(ctx context.Context) (nodes.CheckerStatus, error)
}

// Status is what every instance knows of the health checker, from the
// database: who ran its last round and when, any disruption, and whether
// the checker is stalled.
type Status struct {
	nodes.CheckerStatus
	// Stalled: no checker has started or completed a round within
	// StallAfter; nothing is watching the nodes.
	Stalled    bool
	StallAfter time.Duration
}

// LastRoundAge is how long ago the last round completed, or -1 when none
// has.
func (s Status) LastRoundAge() time.Duration {
	if s.RoundAt == nil {
		return -1
	}
	return max(s.Now.Sub(*s.RoundAt), 0)
}

// Status reads the checker's status and the disruption guard's state.
func (s *Store) Status(ctx context.Context) (Status, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return Status{}, err
	}
	cs, err := s.svc.CheckerStatus(ctx)
	out := Status{CheckerStatus: cs, StallAfter: st.StallAfter()}
	if err != nil {
		return out, err
	}
	last := cs.LastActive()
	out.Stalled = last == nil || cs.Now.Sub(*last) > out.StallAfter
	return out, nil
}
