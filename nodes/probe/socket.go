package probe

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Socket is where a node's service listens, as its address says: the
// transport ("udp" or "tcp"), the host (lower case, without brackets) and
// the port.
type Socket struct {
	Transport string
	Host      string
	Port      int
}

// HostPort is host:port, bracketing an IPv6 host.
func (s Socket) HostPort() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Key names the socket whatever the spelling of the address, so two
// nodes on one service socket can be told apart from two nodes on one
// host: "udp://10.0.0.5:5060".
func (s Socket) Key() string { return s.Transport + "://" + s.HostPort() }

// SocketOf returns the socket a node's service address points at: the SIP
// transport, host and port for media, ivr and queue; the TCP host and
// port of the WebRTC probe URL for meeting (80 or 443 when the URL names
// none); the TCP host and port for im.
func SocketOf(kind, address string) (Socket, error) {
	switch kind {
	case KindMedia, KindIVR, KindQueue:
		host, port, transport, err := ParseSIPAddress(address)
		if err != nil {
			return Socket{}, err
		}
		return Socket{Transport: transport, Host: strings.ToLower(host), Port: port}, nil
	case KindMeeting:
		u, err := ParseWebRTCAddress(address)
		if err != nil {
			return Socket{}, err
		}
		host, port, err := splitHostPort(u.Host, false)
		if err != nil {
			return Socket{}, err
		}
		if port == 0 {
			port = 80
			if u.Scheme == "https" {
				port = 443
			}
		}
		return Socket{Transport: "tcp", Host: strings.ToLower(host), Port: port}, nil
	case KindIM:
		hp, err := ParseTCPAddress(address)
		if err != nil {
			return Socket{}, err
		}
		host, p, _ := net.SplitHostPort(hp)
		port, _ := strconv.Atoi(p)
		return Socket{Transport: "tcp", Host: strings.ToLower(host), Port: port}, nil
	}
	return Socket{}, fmt.Errorf("unknown node kind %q", kind)
}
