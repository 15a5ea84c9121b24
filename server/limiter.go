package server

import (
	"sync"
	"time"
)

// limiter allows n attempts per key in each window, for enrolment
// throttling per source address.
type limiter struct {
	n      int
	window time.Duration
	mu     sync.Mutex
	hits   map[string][]time.Time
}

func newLimiter(n int, window time.Duration) *limiter {
	return &limiter{n: n, window: window, hits: map[string][]time.Time{}}
}

// allow records an attempt and reports whether it is within the limit.
func (l *limiter) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	h := l.hits[key]
	i := 0
	for i < len(h) && now.Sub(h[i]) > l.window {
		i++
	}
	h = append(h[i:], now)
	l.hits[key] = h
	return len(h) <= l.n
}

func (l *limiter) prune() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for k, h := range l.hits {
		if len(h) == 0 || now.Sub(h[len(h)-1]) > l.window {
			delete(l.hits, k)
		}
	}
}
