package probe

import (
	"context"
	"errors"
	"net"
)

// probeTCP connects to the im node's host:port and hangs up.
func (p *Prober) probeTCP(ctx context.Context, address string) Result {
	addr, err := ParseTCPAddress(address)
	if err != nil {
		return Result{Detail: shorten(err.Error())}
	}
	conn, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return failure(ctx, err)
	}
	_ = conn.Close()
	return Result{OK: true, Detail: "connected"}
}

// tcpEndpoint accepts TCP connections and closes them at once: a connect is the probe.
type tcpEndpoint struct {
	ln net.Listener
}

func newTCPEndpoint(listen string) (*tcpEndpoint, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	return &tcpEndpoint{ln: ln}, nil
}

// serve runs until the listener is closed.
func (t *tcpEndpoint) serve() {
	for {
		conn, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Out of file descriptors and the like: keep serving, the next probe retries.
			continue
		}
		_ = conn.Close()
	}
}
