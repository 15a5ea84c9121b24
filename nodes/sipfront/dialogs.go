package sipfront

import (
	"sync"
	"time"
)

// dialogTTL is how long this instance routes a dialog it set up from
// memory. The row in Postgres is the truth; the cache spares the ACK and
// a quick BYE a lookup, and keeps them in order behind each other. A call
// whose work moves (its node failed) is routed by its row once its entry
// has expired, which is at most this long after it was answered.
const dialogTTL = 10 * time.Second

type cachedDialog struct {
	fromTag  string // the caller's tag
	nodeAddr string
	at       time.Time
}

// dialogCache maps call refs to their route for dialogs this instance
// answered recently.
type dialogCache struct {
	m sync.Map // ref -> cachedDialog
}

func (c *dialogCache) put(ref, fromTag, nodeAddr string) {
	c.m.Store(ref, cachedDialog{fromTag: fromTag, nodeAddr: nodeAddr, at: time.Now()})
}

// get returns the cached route of the first ref found and fresh.
func (c *dialogCache) get(refs ...string) (string, cachedDialog, bool) {
	for _, ref := range refs {
		if v, ok := c.m.Load(ref); ok {
			d := v.(cachedDialog)
			if time.Since(d.at) < dialogTTL {
				return ref, d, true
			}
		}
	}
	return "", cachedDialog{}, false
}

func (c *dialogCache) forget(ref string) { c.m.Delete(ref) }

// sweep drops expired entries.
func (c *dialogCache) sweep() {
	c.m.Range(func(k, v any) bool {
		if time.Since(v.(cachedDialog).at) >= dialogTTL {
			c.m.Delete(k)
		}
		return true
	})
}
