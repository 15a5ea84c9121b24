package server

import (
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/callplane/callplane/nodes"
)

// Config is everything a call manager instance needs. Flags and their
// environment twins fill it in cmd/callmanager.
type Config struct {
	DatabaseURL string // empty: the local Postgres under DataDir
	DataDir     string
	Listen      string
	TLSCert     string
	TLSKey      string
	SMTPURL     string
	AlertFrom   string
	AlertTo     string
	// PublicURL is how people reach the portal, for links in emails and
	// join commands; empty means https://<listen address>.
	PublicURL string
	// InstanceID names this instance in the leader lease; empty picks
	// hostname-pid.
	InstanceID string
	// LeaseTTL is how long a leader lease lasts without renewal.
	LeaseTTL time.Duration
	// HeartbeatFlush is how often batched heartbeats are written.
	HeartbeatFlush time.Duration
	// MetricsListen, when set, serves /metrics over plain HTTP without
	// authentication on this address (for a Prometheus on a private
	// network); /metrics on Listen always asks for an API token.
	MetricsListen string
	// Version is the build version shown in the portal.
	Version string
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// (--trusted-proxies); from anyone else it is ignored.
	TrustedProxies []netip.Prefix
	// MaxConnsPerClient caps the open connections of one client address
	// (0: DefaultMaxConnsPerClient; negative: no cap).
	MaxConnsPerClient int
	// BodyTimeout bounds the time a request body may take to arrive.
	BodyTimeout time.Duration
	// AckTimeout: an assignment not acknowledged within it is placed
	// again (nodes.DefaultAckTimeout).
	AckTimeout time.Duration
	// SIPListen is host:port of the SIP front door (UDP and TCP); empty
	// turns it off. SIPPublic is the host:port written into Record-Route
	// (empty: the bound listen address).
	SIPListen string
	SIPPublic string
}

// Edge defaults.
const (
	DefaultMaxConnsPerClient = 256
	DefaultBodyTimeout       = 10 * time.Second
	// HeaderTimeout bounds the time request headers may take to arrive.
	HeaderTimeout = 10 * time.Second
)

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = ".data"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8443"
	}
	if c.InstanceID == "" {
		host, _ := os.Hostname()
		c.InstanceID = host + "-" + itoa(os.Getpid())
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 5 * time.Second
	}
	if c.HeartbeatFlush == 0 {
		c.HeartbeatFlush = 250 * time.Millisecond
	}
	if c.MaxConnsPerClient == 0 {
		c.MaxConnsPerClient = DefaultMaxConnsPerClient
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = nodes.DefaultAckTimeout
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = DefaultBodyTimeout
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	c.DataDir = filepath.Clean(c.DataDir)
	return c
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for i > 0 {
		b = append([]byte{digits[i%10]}, b...)
		i /= 10
	}
	return string(b)
}
