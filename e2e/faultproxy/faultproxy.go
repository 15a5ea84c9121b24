// Package faultproxy puts a real TCP fault proxy, Shopify's toxiproxy run
// in-process as a library, between the parts of a Callplane cluster in
// tests: agents and call managers, call managers and SMTP. A proxy listens
// on a loopback port and forwards to its upstream; a test takes it down
// (connections refused and cut, as when a virtual IP moves or a link
// fails) or freezes it (connections accepted, nothing passes, as with a
// paused process).
package faultproxy

import (
	"context"
	"fmt"
	"strings"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Server holds the proxies of one test program.
type Server struct {
	api *toxiproxy.ApiServer

	mu sync.Mutex
	n  int
}

// New returns a toxiproxy server with no proxies; it listens on nothing
// until a proxy is added.
func New() *Server {
	return &Server{api: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())}
}

// Proxy is one forwarding listener.
type Proxy struct {
	p *toxiproxy.Proxy
	// Addr is the loopback address it listens on (stable across Down/Up).
	Addr string
}

// Proxy starts a proxy on a free loopback port that forwards to upstream.
func (s *Server) Proxy(name, upstream string) (*Proxy, error) {
	s.mu.Lock()
	s.n++
	name = fmt.Sprintf("%s-%d", name, s.n)
	s.mu.Unlock()
	p := toxiproxy.NewProxy(s.api, name, "127.0.0.1:0", upstream)
	if err := s.api.Collection.Add(p, true); err != nil {
		return nil, fmt.Errorf("start proxy %s: %w", name, err)
	}
	// Listen now holds the bound port, so Up binds the same one again.
	return &Proxy{p: p, Addr: p.Listen}, nil
}

// Close stops every proxy.
func (s *Server) Close() error { return s.api.Collection.Clear() }

// Down closes the listener and every connection through the proxy: new
// connections are refused until Up.
func (p *Proxy) Down() { p.p.Stop() }

// Up listens again on the same address.
func (p *Proxy) Up() error {
	err := p.p.Start()
	if err == toxiproxy.ErrProxyAlreadyStarted {
		return nil
	}
	return err
}

// freeze is the name of the toxic Freeze adds on each direction.
const freeze = "freeze"

// Freeze lets connections in but passes no byte either way, as a stopped
// (SIGSTOP) process whose kernel still accepts connections would.
func (p *Proxy) Freeze() error {
	for _, dir := range []string{"upstream", "downstream"} {
		spec := fmt.Sprintf(`{"name":%q,"type":"timeout","stream":%q,"toxicity":1,"attributes":{"timeout":0}}`, freeze+"_"+dir, dir)
		if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
			return fmt.Errorf("freeze %s: %w", p.p.Name, err)
		}
	}
	return nil
}

// Thaw ends Freeze; the connections held frozen are closed.
func (p *Proxy) Thaw() error {
	for _, dir := range []string{"upstream", "downstream"} {
		if err := p.p.Toxics.RemoveToxic(context.Background(), freeze+"_"+dir); err != nil {
			return fmt.Errorf("thaw %s: %w", p.p.Name, err)
		}
	}
	return nil
}
