package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
)

// Every instance advertises the URL agents reach it at, so that the join
// command lists every call manager of the cluster and agents need no
// virtual IP in front of them (they move to the next URL when one stops
// answering). The adverts are rows of the settings table under
// "instance:<id>"; the health settings ignore keys they do not know, and
// updated_at says when the instance was last seen.
const (
	instanceKeyPrefix = "instance:"
	// advertiseEvery is how often a running instance refreshes its advert;
	// it reads the others' every refreshEvery, so a new instance shows in
	// join commands within seconds.
	advertiseEvery = 30 * time.Second
	refreshEvery   = 5 * time.Second
	// advertKept is how long an advert counts after its instance was last
	// seen: long enough that an instance down for maintenance is still
	// listed, short enough that a removed one leaves join commands soon.
	advertKept = time.Hour
)

// advert is what an instance stores about itself.
type advert struct {
	URL string `json:"url"`
	Pin string `json:"pin"`
}

// advertise stores this instance's advert.
func advertise(ctx context.Context, pool *pgxpool.Pool, id string, a advert) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return db.Q.SettingUpsert(ctx, pool, dbsqlc.SettingUpsertParams{Key: instanceKeyPrefix + id, Value: string(b), UpdatedBy: "instance " + id})
}

// joinServers lists the URLs agents should know: self first (when it has
// a URL: a command-line process serves nothing itself), then every
// other instance seen within advertKept that serves the same key (the one
// pin of a join command must hold for each URL), without duplicates.
// Instances behind one virtual IP advertise the same URL, which is then
// listed once.
func joinServers(ctx context.Context, pool *pgxpool.Pool, self advert) ([]string, error) {
	rows, err := db.Q.SettingList(ctx, pool)
	if err != nil {
		return nil, err
	}
	type seen struct {
		id string
		advert
	}
	var others []seen
	for _, r := range rows {
		id, ok := strings.CutPrefix(r.Key, instanceKeyPrefix)
		if !ok || time.Since(r.UpdatedAt) > advertKept {
			continue
		}
		var a advert
		if json.Unmarshal([]byte(r.Value), &a) != nil || a.URL == "" || a.Pin != self.Pin {
			continue
		}
		others = append(others, seen{id, a})
	}
	slices.SortFunc(others, func(x, y seen) int { return strings.Compare(x.id, y.id) })
	var urls []string
	if self.URL != "" {
		urls = append(urls, self.URL)
	}
	for _, o := range others {
		if !slices.Contains(urls, o.URL) {
			urls = append(urls, o.URL)
		}
	}
	return urls, nil
}

// instanceAdverts keeps this instance's advert fresh and the list of join
// URLs at hand for the portal, which builds join commands without a
// database round trip.
type instanceAdverts struct {
	mu   sync.Mutex
	urls []string
}

// run advertises this instance and refreshes the join URLs until ctx ends.
func (ia *instanceAdverts) run(ctx context.Context, pool *pgxpool.Pool, id string, self advert, log *slog.Logger) {
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	var advertised time.Time
	for {
		if time.Since(advertised) >= advertiseEvery {
			if err := advertise(ctx, pool, id, self); err != nil {
				if ctx.Err() == nil {
					log.Warn("advertise this instance for join commands", "err", err)
				}
			} else {
				advertised = time.Now()
			}
		}
		if urls, err := joinServers(ctx, pool, self); err == nil {
			ia.mu.Lock()
			ia.urls = urls
			ia.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// get returns the join URLs, comma-separated as nodeagent --server takes
// them, or fallback before the first refresh.
func (ia *instanceAdverts) get(fallback string) string {
	ia.mu.Lock()
	defer ia.mu.Unlock()
	if len(ia.urls) == 0 {
		return fallback
	}
	return strings.Join(ia.urls, ",")
}
