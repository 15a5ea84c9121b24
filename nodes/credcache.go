package nodes

import (
	"sync"
	"time"
)

// CredentialCacheTTL bounds how long a checked node credential is trusted
// without asking Postgres again. Every change that affects an agent's
// access (disable, remove, re-enrol, rotation) drops the node's entries at
// once on the instance that made it and, through the assignment
// notification, on every other instance; the TTL only bounds what a lost
// notification or a change made behind Callplane's back (raw SQL) can
// leave stale. A notification is only lost with the listening connection,
// and the listener drops every cached check when it reconnects, so the TTL
// is a backstop for raw SQL: a minute (at 10 s, a thousand agents' beats
// cost a hundred lookups a second, 5 % of the heartbeat path's CPU).
const CredentialCacheTTL = time.Minute

// credCache remembers recent successful credential checks, so the
// heartbeats, long-polls and acks of a thousand agents do not each cost a
// database round trip.
type credCache struct {
	mu  sync.Mutex
	m   map[string]credEntry // by credential id
	ttl time.Duration        // 0: CredentialCacheTTL
}

type credEntry struct {
	hash       []byte
	auth       NodeAuth
	validUntil time.Time
}

func (c *credCache) get(id string) (credEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok || time.Now().After(e.validUntil) {
		return credEntry{}, false
	}
	return e, true
}

func (c *credCache) put(id string, e credEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]credEntry{}
	}
	// Drop stale entries now and then so removed nodes do not pile up.
	if len(c.m) > 4096 {
		now := time.Now()
		for k, v := range c.m {
			if now.After(v.validUntil) {
				delete(c.m, k)
			}
		}
	}
	c.m[id] = e
}

// dropNodes forgets the credentials of the given nodes; all when ids is nil.
func (c *credCache) dropNodes(ids []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ids == nil {
		c.m = nil
		return
	}
	drop := make(map[int64]bool, len(ids))
	for _, id := range ids {
		drop[id] = true
	}
	for k, v := range c.m {
		if drop[v.auth.NodeID] {
			delete(c.m, k)
		}
	}
}

func (c *credCache) lifetime() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ttl > 0 {
		return c.ttl
	}
	return CredentialCacheTTL
}

// SetCredentialCacheTTL changes how long credential checks are cached
// (tests use a long one to show that notifications, not expiry, refresh it).
func (s *Service) SetCredentialCacheTTL(d time.Duration) {
	s.creds.mu.Lock()
	s.creds.ttl = d
	s.creds.mu.Unlock()
}

// ForgetCredentials drops cached credential checks for nodes whose access
// may have changed (all nodes when ids is nil). The assignment listener
// calls it for every notification, so a change made through any instance
// reaches this one's cache.
func (s *Service) ForgetCredentials(ids []int64) { s.creds.dropNodes(ids) }
