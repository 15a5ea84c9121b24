package e2e

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/callplane/callplane/e2e/harness"
)

// vip stands for the virtual IP or TCP load balancer an operator puts in
// front of several call managers: agents and join commands use its
// address, and it forwards each connection (TLS passes through) to the
// first instance that accepts one. With one shared certificate behind it,
// the CA pin in a join command holds whichever instance answers.
type vip struct {
	ln net.Listener

	mu       sync.Mutex
	backends []string
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func startVIP(t *testing.T) *vip {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("vip: listen: %v", err)
	}
	v := &vip{ln: ln, conns: map[net.Conn]struct{}{}}
	v.wg.Add(1)
	go v.accept()
	t.Cleanup(v.close)
	return v
}

func (v *vip) addr() string { return v.ln.Addr().String() }

func (v *vip) setBackends(addrs ...string) {
	v.mu.Lock()
	v.backends = addrs
	v.mu.Unlock()
}

func (v *vip) accept() {
	defer v.wg.Done()
	for {
		c, err := v.ln.Accept()
		if err != nil {
			return
		}
		v.wg.Add(1)
		go v.forward(c)
	}
}

func (v *vip) track(c net.Conn, on bool) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if on {
		if v.conns == nil {
			return false // closed
		}
		v.conns[c] = struct{}{}
	} else if v.conns != nil {
		delete(v.conns, c)
	}
	return true
}

func (v *vip) forward(c net.Conn) {
	defer v.wg.Done()
	defer c.Close()
	v.mu.Lock()
	backends := append([]string(nil), v.backends...)
	v.mu.Unlock()
	var up net.Conn
	for _, b := range backends {
		var err error
		if up, err = net.DialTimeout("tcp", b, 2*time.Second); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	if !v.track(c, true) || !v.track(up, true) {
		return
	}
	defer v.track(c, false)
	defer v.track(up, false)
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done // either side ended: end both
}

func (v *vip) close() {
	v.ln.Close()
	v.mu.Lock()
	for c := range v.conns {
		c.Close()
	}
	v.conns = nil
	v.mu.Unlock()
	v.wg.Wait()
}

// writeCert creates the self-signed certificate every instance of a
// cluster serves (--tls-cert/--tls-key), valid for 127.0.0.1.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) { return harness.WriteCert(t, dir) }
