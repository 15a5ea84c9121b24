package nodes

import (
	"context"

	"github.com/callplane/callplane/server/metrics"
)

type previewKey struct{}

// asPreview marks ctx as a preview's: the action runs in a transaction
// that is rolled back, and nothing it does may count in the metrics.
func asPreview(ctx context.Context) context.Context {
	return context.WithValue(ctx, previewKey{}, true)
}

func previewing(ctx context.Context) bool {
	v, _ := ctx.Value(previewKey{}).(bool)
	return v
}

// countPlaced records placements that committed: placed or left waiting.
func countPlaced(workKind, state, cause string, n int) {
	if n <= 0 {
		return
	}
	outcome := "placed"
	if state == WorkUnplaced {
		outcome = "unplaced"
	}
	metrics.Placements.WithLabelValues(workKind, outcome, metrics.Cause(cause)).Add(float64(n))
}

// countMoved records what a move did, by its cause.
func countMoved(workKind, cause string, mr MoveResult) {
	c := metrics.Cause(cause)
	if mr.Moved > 0 {
		metrics.Moves.WithLabelValues(workKind, c, "moved").Add(float64(mr.Moved))
	}
	if mr.Unplaced > 0 {
		metrics.Moves.WithLabelValues(workKind, c, "unplaced").Add(float64(mr.Unplaced))
	}
}

// init makes the placement series of every work kind exist from the
// start, at zero.
func init() {
	for _, k := range WorkKinds {
		metrics.Placements.WithLabelValues(k, "placed", "new")
		metrics.Placements.WithLabelValues(k, "unplaced", "new")
	}
}
