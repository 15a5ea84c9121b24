package server

import (
	"context"
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

// set records the outcome of an acquire or renew (epoch 0: not leading)
// and signals a change when the epoch differs or when this instance had
// stopped trusting its lease (a renew came late: the process was paused,
// the database was slow) and now holds it again with the same epoch, so
// WhileLeading restarts what it stopped.
func (l *Leader) set(epoch int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	lapsed := l.epoch != 0 && now.Sub(l.renewed) > l.ttl*2/3
	if epoch != 0 {
		l.renewed = now
	}
	if l.epoch != epoch || (lapsed && epoch != 0) {
		if lapsed && l.epoch == epoch {
			l.log.Warn("leadership regained after a late lease renewal; restarting leader tasks", "epoch", epoch)
		}
		l.epoch = epoch
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

// StepDown gives up leadership held with epoch: it releases the lease so
// another instance (or this one, afresh) takes over at once, and stops
// this instance's leader tasks. The health checker calls it when it has
// not completed a round for too long, so a stuck leader never keeps the
// lease while nothing watches the nodes.
func (l *Leader) StepDown(epoch int64, reason string) {
	l.mu.Lock()
	current := l.epoch
	l.mu.Unlock()
	if current != epoch || epoch == 0 {
		return
	}
	l.log.Error("stepping down as leader", "epoch", epoch, "reason", reason)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := db.Q.LeaderRelease(ctx, l.pool, dbsqlc.LeaderReleaseParams{Holder: l.id, Epoch: epoch}); err != nil {
		l.log.Warn("release leader lease; it expires on its own", "epoch", epoch, "err", err)
	}
	l.set(0)
}

// Current names the instance whose lease is live, or "" (also when the
// database cannot say: every portal page shows it, and the page says
// what is wrong with the database).
func (l *Leader) Current(ctx context.Context) string {
	holder, err := db.Q.LeaderHolder(ctx, l.pool)
	if err != nil {
		return ""
	}
	return holder
}

// LeaseEpoch reads the lease's epoch, whoever holds it and whether or
// not it has expired.
func (l *Leader) LeaseEpoch(ctx context.Context) (int64, error) {
	return db.Q.LeaderEpoch(ctx, l.pool)
}

// Fence checks, inside tx, that this instance still leads with the epoch
// it thinks it has, and holds the lease row so it cannot change hands
// before tx ends. It returns nodes.ErrNotLeader otherwise.
func (l *Leader) Fence(ctx context.Context, tx pgx.Tx, epoch int64) error {
	_, err := db.Q.LeaderFence(ctx, tx, dbsqlc.LeaderFenceParams{Holder: l.id, Epoch: epoch})
	if db.IsNotFound(err) {
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
		case db.IsNotFound(err):
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
	} else if !db.IsNotFound(err) && ctx.Err() == nil {
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
