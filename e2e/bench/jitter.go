package main

import (
	"bytes"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// jitterSIP is a minimal SIP UAS on UDP that answers OPTIONS with 200 OK
// after a random delay in [0, jitter): a media server on a congested
// network. It copies Via, From, To, Call-ID and CSeq as RFC 3261 asks, so
// the call manager's sipgo prober matches the answer to its transaction
// and checks it as it would a real server's.
type jitterSIP struct {
	conn   net.PacketConn
	jitter time.Duration
	wg     sync.WaitGroup
	closed chan struct{}
}

func newJitterSIP(jitter time.Duration) (*jitterSIP, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	j := &jitterSIP{conn: c, jitter: jitter, closed: make(chan struct{})}
	j.wg.Add(1)
	go j.serve()
	return j, nil
}

func (j *jitterSIP) Address() string { return j.conn.LocalAddr().String() }

func (j *jitterSIP) Close() {
	close(j.closed)
	_ = j.conn.Close()
	j.wg.Wait()
}

func (j *jitterSIP) serve() {
	defer j.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := j.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		res := sipAnswer(buf[:n])
		if res == nil {
			continue
		}
		d := time.Duration(rand.Int64N(int64(j.jitter) + 1))
		time.AfterFunc(d, func() {
			select {
			case <-j.closed:
			default:
				_, _ = j.conn.WriteTo(res, from)
			}
		})
	}
}

// sipAnswer builds the 200 OK for an OPTIONS request, or nil.
func sipAnswer(req []byte) []byte {
	head, _, _ := bytes.Cut(req, []byte("\r\n\r\n"))
	lines := bytes.Split(head, []byte("\r\n"))
	if len(lines) == 0 || !bytes.HasPrefix(lines[0], []byte("OPTIONS ")) {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, l := range lines[1:] {
		name, _, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		switch string(bytes.ToLower(bytes.TrimSpace(name))) {
		case "via", "v", "from", "f", "call-id", "i", "cseq":
			b.Write(l)
			b.WriteString("\r\n")
		case "to", "t":
			b.Write(l)
			if !bytes.Contains(l, []byte("tag=")) {
				b.WriteString(";tag=bench")
			}
			b.WriteString("\r\n")
		}
	}
	b.WriteString("Allow: OPTIONS\r\nContent-Length: 0\r\n\r\n")
	return b.Bytes()
}
