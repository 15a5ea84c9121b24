package probe

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestParseSIPAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		host      string
		port      int
		transport string
		errPart   string // non-empty: an error containing this is expected
	}{
		{in: "127.0.0.1:5060", host: "127.0.0.1", port: 5060, transport: "udp"},
		{in: "media1.example.com:5080", host: "media1.example.com", port: 5080, transport: "udp"},
		{in: "[::1]:5060", host: "::1", port: 5060, transport: "udp"},
		{in: "sip:10.0.0.5:5060", host: "10.0.0.5", port: 5060, transport: "udp"},
		{in: "sip:10.0.0.5", host: "10.0.0.5", port: 5060, transport: "udp"},
		{in: "sip:10.0.0.5:5070;transport=tcp", host: "10.0.0.5", port: 5070, transport: "tcp"},
		{in: "sip:10.0.0.5:5070;transport=TCP", host: "10.0.0.5", port: 5070, transport: "tcp"},
		{in: "SIP:ivr.local:5060;transport=udp", host: "ivr.local", port: 5060, transport: "udp"},
		{in: "sip:[2001:db8::1]:5060;transport=tcp", host: "2001:db8::1", port: 5060, transport: "tcp"},

		{in: "", errPart: "empty"},
		{in: "127.0.0.1", errPart: "missing port"},
		{in: "127.0.0.1:", errPart: "empty port"},
		{in: "127.0.0.1:0", errPart: "out of range"},
		{in: "127.0.0.1:65536", errPart: "out of range"},
		{in: "127.0.0.1:-1", errPart: "not a number"},
		{in: "127.0.0.1:+5060", errPart: "not a number"},
		{in: "127.0.0.1:sip", errPart: "not a number"},
		{in: ":5060", errPart: "missing host"},
		{in: "::1:5060", errPart: "brackets"},
		{in: "[::1:5060", errPart: "unterminated"},
		{in: "[127.0.0.1]:5060", errPart: "not an IPv6"},
		{in: "999.1.1.1:5060", errPart: "invalid IP"},
		{in: "bad_host!:5060", errPart: "invalid host"},
		{in: " 127.0.0.1:5060", errPart: "whitespace"},
		{in: "127.0.0.1:5060;transport=tcp", errPart: "sip: form"},
		{in: "udp://127.0.0.1:5060", errPart: "not host:port"},
		{in: "sips:10.0.0.5:5061", errPart: "not supported"},
		{in: "sip:10.0.0.5:5060;transport=tls", errPart: "transport"},
		{in: "sip:10.0.0.5:5060;transport=", errPart: "transport"},
		{in: "sip:10.0.0.5:5060;lr", errPart: "unsupported URI parameter"},
		{in: "sip:10.0.0.5:5060;", errPart: "empty URI parameter"},
		{in: "sip:alice@10.0.0.5:5060", errPart: "user parts"},
		{in: "sip://10.0.0.5:5060", errPart: "no //"},
		{in: "sip:", errPart: "missing host"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			host, port, transport, err := ParseSIPAddress(tt.in)
			if tt.errPart != "" {
				if err == nil {
					t.Fatalf("ParseSIPAddress(%q) = %q, %d, %q; want error containing %q", tt.in, host, port, transport, tt.errPart)
				}
				if !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("ParseSIPAddress(%q) error = %q; want it to contain %q", tt.in, err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSIPAddress(%q): %v", tt.in, err)
			}
			if host != tt.host || port != tt.port || transport != tt.transport {
				t.Fatalf("ParseSIPAddress(%q) = %q, %d, %q; want %q, %d, %q", tt.in, host, port, transport, tt.host, tt.port, tt.transport)
			}
		})
	}
}

func TestParseWebRTCAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    string
		errPart string
	}{
		{in: "http://127.0.0.1:8080/", want: "http://127.0.0.1:8080/"},
		{in: "https://meet1.example.com/probe", want: "https://meet1.example.com/probe"},
		{in: "https://[::1]:8443/", want: "https://[::1]:8443/"},
		{in: "", errPart: "empty"},
		{in: "ftp://host/", errPart: "scheme"},
		{in: "127.0.0.1:8080", errPart: "scheme"},
		{in: "http://", errPart: "no host"},
		{in: "http:opaque", errPart: "scheme"},
		{in: "http://user:pw@host/", errPart: "credentials"},
		{in: "http://host/#frag", errPart: "fragment"},
		{in: "http://host:0/", errPart: "out of range"},
		{in: "http://host:99999/", errPart: ""},
		{in: "http://ho st/", errPart: "whitespace"},
		{in: "http://%zz/", errPart: "WebRTC probe URL"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := ParseWebRTCAddress(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ParseWebRTCAddress(%q) = %v; want error", tt.in, u)
				}
				if !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("ParseWebRTCAddress(%q) error = %q; want it to contain %q", tt.in, err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWebRTCAddress(%q): %v", tt.in, err)
			}
			if u.String() != tt.want {
				t.Fatalf("ParseWebRTCAddress(%q) = %q; want %q", tt.in, u, tt.want)
			}
		})
	}
}

func TestParseTCPAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    string
		errPart string
	}{
		{in: "127.0.0.1:5222", want: "127.0.0.1:5222"},
		{in: "im1.example.com:5222", want: "im1.example.com:5222"},
		{in: "[::1]:5222", want: "[::1]:5222"},
		{in: "", errPart: "empty"},
		{in: "127.0.0.1", errPart: "missing port"},
		{in: "127.0.0.1:0", errPart: "out of range"},
		{in: "tcp://127.0.0.1:5222", errPart: "not host:port"},
		{in: "sip:127.0.0.1:5222", errPart: "not host:port"},
		{in: "127.0.0.1:5222/x", errPart: "not host:port"},
		{in: "a b:1", errPart: "not host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTCPAddress(tt.in)
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("ParseTCPAddress(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.errPart)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseTCPAddress(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestValidateAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind, address string
		ok            bool
	}{
		{"media", "127.0.0.1:5060", true},
		{"ivr", "sip:127.0.0.1:5060;transport=tcp", true},
		{"queue", "http://127.0.0.1:5060/", false},
		{"meeting", "https://127.0.0.1:8443/", true},
		{"meeting", "127.0.0.1:8443", false},
		{"im", "127.0.0.1:5222", true},
		{"im", "sip:127.0.0.1:5222", false},
		{"fax", "127.0.0.1:5060", false},
		{"", "127.0.0.1:5060", false},
	}
	for _, tt := range tests {
		err := ValidateAddress(tt.kind, tt.address)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateAddress(%q, %q) = %v; want ok=%v", tt.kind, tt.address, err, tt.ok)
		}
	}
}

func FuzzParseSIPAddress(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1:5060", "sip:10.0.0.5:5070;transport=tcp", "sip:[::1]:5060;transport=udp",
		"[::1]:5060", "sip:", "sips:x", "sip:a@b", "::::", "[", "]:", "sip:h;transport=tcp;",
		"host.example.com:65535", "sip:0:0", "\x00:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, transport, err := ParseSIPAddress(s)
		if err != nil {
			return
		}
		if host == "" || port < 1 || port > 65535 || (transport != "udp" && transport != "tcp") {
			t.Fatalf("ParseSIPAddress(%q) = %q, %d, %q: accepted an invalid address", s, host, port, transport)
		}
		// Whatever is accepted must survive a round trip through the canonical form.
		canon := "sip:" + net.JoinHostPort(host, strconv.Itoa(port)) + ";transport=" + transport
		h2, p2, t2, err := ParseSIPAddress(canon)
		if err != nil || h2 != host || p2 != port || t2 != transport {
			t.Fatalf("round trip of %q via %q = %q, %d, %q, %v", s, canon, h2, p2, t2, err)
		}
	})
}

func TestSocketOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind, address, key string
	}{
		{KindMedia, "10.0.0.5:5060", "udp://10.0.0.5:5060"},
		{KindMedia, "sip:10.0.0.5", "udp://10.0.0.5:5060"},
		{KindIVR, "sip:10.0.0.5:5060;transport=udp", "udp://10.0.0.5:5060"},
		{KindQueue, "sip:PBX.example.com:5070;transport=tcp", "tcp://pbx.example.com:5070"},
		{KindMeeting, "http://10.0.0.7:8080/probe", "tcp://10.0.0.7:8080"},
		{KindMeeting, "https://meet.example.com/", "tcp://meet.example.com:443"},
		{KindIM, "[::1]:7000", "tcp://[::1]:7000"},
	}
	for _, tt := range tests {
		s, err := SocketOf(tt.kind, tt.address)
		if err != nil {
			t.Errorf("SocketOf(%s, %q): %v", tt.kind, tt.address, err)
			continue
		}
		if s.Key() != tt.key {
			t.Errorf("SocketOf(%s, %q).Key() = %q; want %q", tt.kind, tt.address, s.Key(), tt.key)
		}
	}
	if _, err := SocketOf(KindIM, "sip:1.2.3.4"); err == nil {
		t.Error("SocketOf accepted a SIP URI for an im node")
	}
}
