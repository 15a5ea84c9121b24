package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes"
)

// Leader elects one instance among those sharing a database, with a lease
// row that carries a growing epoch. The leader renews it every third of
// its lifetime; when the leader dies, another instance takes over once
// the lease expires. Leader-only writes run through Fence, so a paused
// ex-leader whose lease moved on changes nothing.
type Leader struct {
	pool *pgxpool.Pool
	id   string
	ttl  time.Duration
	log  *slog.Logger

	mu      sync.Mutex
	epoch   int64     // 0 when not leading
	renewed time.Time // last successful acquire or renew
	changed chan struct{}
}

// NewLeader returns an elector for instance id.
func NewLeader(pool *pgxpool.Pool, id string, ttl time.Duration, log *slog.Logger) *Leader {
	return &Leader{pool: pool, id: id, ttl: ttl, log: log, changed: make(chan struct{})}
}

// ID is this instance's name in the lease.
func (l *Leader) ID() string { return l.id }

// Epoch returns the lease epoch while this instance leads.
func (l *Leader) Epoch() (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Stop acting as leader before the lease can expire in the database.
	if l.epoch != 0 && time.Since(l.renewed) > l.ttl*2/3 {
		return 0, false
	}
	return l.epoch, l.epoch != 0
}

// Changed returns a channel closed at the next change of leadership.
func (l *Leader) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

func (l *Leader) set(epoch int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if epoch != 0 {
		l.renewed = time.Now()
	}
	if l.epoch != epoch {
		l.epoch = epoch
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

// Current names the instance whose lease is live, or "".
func (l *Leader) Current(ctx context.Context) string {
	row, err := db.Q.LeaderGet(ctx, l.pool)
	if err != nil || row.ExpiresAt.Before(time.Now()) {
		return ""
	}
	return row.Holder
}

// Fence checks, inside tx, that this instance still leads with the epoch
// it thinks it has, and holds the lease row so it cannot change hands
// before tx ends. It returns nodes.ErrNotLeader otherwise.
func (l *Leader) Fence(ctx context.Context, tx pgx.Tx, epoch int64) error {
	_, err := db.Q.LeaderFence(ctx, tx, dbsqlc.LeaderFenceParams{Holder: l.id, Epoch: epoch})
	if errors.Is(err, pgx.ErrNoRows) {
		return nodes.ErrNotLeader
	}
	return err
}

// Run campaigns for and renews the lease until ctx ends, then releases it
// so another instance takes over at once.
func (l *Leader) Run(ctx context.Context) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		l.tick(ctx)
		select {
		case <-ctx.Done():
			if epoch, ok := l.Epoch(); ok {
				rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = db.Q.LeaderRelease(rctx, l.pool, dbsqlc.LeaderReleaseParams{Holder: l.id, Epoch: epoch})
				cancel()
				l.log.Info("leadership released", "epoch", epoch)
			}
			l.set(0)
			return
		case <-t.C:
		}
	}
}

func (l *Leader) tick(ctx context.Context) {
	l.mu.Lock()
	epoch := l.epoch
	l.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	if epoch != 0 {
		_, err := db.Q.LeaderRenew(cctx, l.pool, dbsqlc.LeaderRenewParams{Holder: l.id, Epoch: epoch, TtlSeconds: l.ttl.Seconds()})
		switch {
		case err == nil:
			l.set(epoch)
			return
		case errors.Is(err, pgx.ErrNoRows):
			l.log.Warn("leadership lost", "epoch", epoch)
			l.set(0)
		default:
			l.log.Warn("renew leader lease", "err", err)
			if _, ok := l.Epoch(); !ok {
				l.set(0)
			}
			return
		}
	}
	e, err := db.Q.LeaderAcquire(cctx, l.pool, dbsqlc.LeaderAcquireParams{Holder: l.id, TtlSeconds: l.ttl.Seconds()})
	if err == nil {
		l.log.Info("this instance is now the leader", "epoch", e)
		l.set(e)
	} else if !errors.Is(err, pgx.ErrNoRows) && ctx.Err() == nil {
		l.log.Warn("acquire leader lease", "err", err)
	}
}

// WhileLeading runs fn whenever this instance leads, with a context that
// ends when leadership is lost or ctx ends.
func (l *Leader) WhileLeading(ctx context.Context, fn func(ctx context.Context, epoch int64)) {
	for ctx.Err() == nil {
		changed := l.Changed()
		if epoch, ok := l.Epoch(); ok {
			lctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); fn(lctx, epoch) }()
			select {
			case <-changed:
			case <-ctx.Done():
			case <-l.expired(lctx):
			}
			cancel()
			<-done
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
		}
	}
}

// expired closes when this instance can no longer trust its lease.
func (l *Leader) expired(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		t := time.NewTicker(l.ttl / 10)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, ok := l.Epoch(); !ok {
					close(ch)
					return
				}
			}
		}
	}()
	return ch
}
