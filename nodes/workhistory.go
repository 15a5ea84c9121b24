package nodes

import (
	"context"
	"time"

	"github.com/callplane/callplane/db/dbsqlc"
)

// WorkChange is one change of a work item's state, node or epoch.
type WorkChange struct {
	At       time.Time
	State    string
	NodeID   *int64
	NodeName string
	Epoch    int64
}

// WorkWithHistory returns a work item by ref and every change of its
// state, node or epoch, oldest first.
func (s *Service) WorkWithHistory(ctx context.Context, ref string) (Work, []WorkChange, error) {
	w, err := s.GetWork(ctx, ref)
	if err != nil {
		return w, nil, err
	}
	rows, err := s.q.WorkHistoryList(ctx, s.pool, dbsqlc.WorkHistoryListParams{WorkID: w.ID, Lim: 1000})
	if err != nil {
		return w, nil, err
	}
	h := make([]WorkChange, len(rows))
	for i, r := range rows {
		h[i] = WorkChange{At: r.At, State: r.State, NodeID: r.NodeID, NodeName: r.NodeName, Epoch: r.Epoch}
	}
	return w, h, nil
}
