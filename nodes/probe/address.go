package probe

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Node kinds whose service address a probe understands. They match the node kinds of
// DESIGN.md.
const (
	KindMedia   = "media"
	KindIVR     = "ivr"
	KindQueue   = "queue"
	KindMeeting = "meeting"
	KindIM      = "im"
)

// defaultSIPPort is the SIP port assumed for a sip: URI without a port (RFC 3261, 19.1.2).
const defaultSIPPort = 5060

// ValidateAddress reports whether address is a valid service address for a node of kind:
// a SIP address for media, ivr and queue, an http(s) URL for meeting, host:port for im.
// The error says what is wrong in words an administrator understands.
func ValidateAddress(kind, address string) error {
	switch kind {
	case KindMedia, KindIVR, KindQueue:
		_, _, _, err := ParseSIPAddress(address)
		return err
	case KindMeeting:
		_, err := ParseWebRTCAddress(address)
		return err
	case KindIM:
		_, err := ParseTCPAddress(address)
		return err
	default:
		return fmt.Errorf("unknown node kind %q (want media, ivr, queue, meeting or im)", kind)
	}
}

// ParseSIPAddress parses the service address of a SIP node (media, ivr, queue). It accepts
//
//	host:port                      SIP over UDP
//	sip:host:port                  SIP over UDP (port defaults to 5060 when omitted)
//	sip:host:port;transport=udp    SIP over UDP
//	sip:host:port;transport=tcp    SIP over TCP
//
// host is an IP address (IPv6 in brackets) or a DNS name. transport is returned as "udp" or
// "tcp"; host is returned without brackets.
func ParseSIPAddress(s string) (host string, port int, transport string, err error) {
	if s == "" {
		return "", 0, "", errors.New("SIP address is empty (want host:port or sip:host:port;transport=tcp)")
	}
	if strings.TrimSpace(s) != s || strings.ContainsAny(s, " \t\r\n") {
		return "", 0, "", fmt.Errorf("SIP address %q contains whitespace", s)
	}
	lower := strings.ToLower(s)
	if strings.HasPrefix(lower, "sips:") {
		return "", 0, "", fmt.Errorf("SIP address %q: sips (SIP over TLS) is not supported; use sip:host:port;transport=tcp or host:port", s)
	}
	if !strings.HasPrefix(lower, "sip:") {
		if strings.Contains(s, ";") {
			return "", 0, "", fmt.Errorf("SIP address %q: parameters need the sip: form, e.g. sip:%s", s, s)
		}
		if strings.Contains(s, "://") {
			return "", 0, "", fmt.Errorf("SIP address %q is not host:port or sip:host:port", s)
		}
		host, port, err := splitHostPort(s, true)
		if err != nil {
			return "", 0, "", fmt.Errorf("SIP address %q: %w", s, err)
		}
		return host, port, "udp", nil
	}

	rest := s[len("sip:"):]
	if strings.HasPrefix(rest, "//") {
		return "", 0, "", fmt.Errorf("SIP address %q: a sip: URI has no // (want sip:host:port)", s)
	}
	if strings.ContainsAny(rest, "?@") {
		return "", 0, "", fmt.Errorf("SIP address %q: user parts and headers are not allowed (want sip:host:port;transport=tcp)", s)
	}
	hostport, params, _ := strings.Cut(rest, ";")
	transport = "udp"
	if params != "" || strings.HasSuffix(rest, ";") {
		for p := range strings.SplitSeq(params, ";") {
			name, value, _ := strings.Cut(p, "=")
			switch strings.ToLower(name) {
			case "transport":
				switch v := strings.ToLower(value); v {
				case "udp", "tcp":
					transport = v
				default:
					return "", 0, "", fmt.Errorf("SIP address %q: transport %q is not supported (want udp or tcp)", s, value)
				}
			case "":
				return "", 0, "", fmt.Errorf("SIP address %q: empty URI parameter", s)
			default:
				return "", 0, "", fmt.Errorf("SIP address %q: unsupported URI parameter %q (only transport=udp|tcp)", s, name)
			}
		}
	}
	host, port, err = splitHostPort(hostport, false)
	if err != nil {
		return "", 0, "", fmt.Errorf("SIP address %q: %w", s, err)
	}
	if port == 0 {
		port = defaultSIPPort
	}
	return host, port, transport, nil
}

// ParseWebRTCAddress parses the service address of a meeting node: the http:// or
// https:// URL of its WebRTC probe endpoint, to which the prober POSTs its offer.
func ParseWebRTCAddress(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("WebRTC probe URL is empty (want http://host:port/ or https://host:port/)")
	}
	if strings.TrimSpace(s) != s || strings.ContainsAny(s, " \t\r\n") {
		return nil, fmt.Errorf("WebRTC probe URL %q contains whitespace", s)
	}
	lower := strings.ToLower(s)
	if !strings.HasPrefix(lower, "http://") && !strings.HasPrefix(lower, "https://") {
		return nil, fmt.Errorf("WebRTC probe URL %q: scheme must be http or https", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("WebRTC probe URL %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("WebRTC probe URL %q: scheme must be http or https", s)
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, fmt.Errorf("WebRTC probe URL %q has no host", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("WebRTC probe URL %q must not carry credentials", s)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("WebRTC probe URL %q must not have a fragment", s)
	}
	if _, _, err := splitHostPort(u.Host, false); err != nil {
		return nil, fmt.Errorf("WebRTC probe URL %q: %w", s, err)
	}
	return u, nil
}

// ParseTCPAddress parses the service address of an im node, host:port, and returns it in
// the canonical form net.Dial accepts.
func ParseTCPAddress(s string) (string, error) {
	if s == "" {
		return "", errors.New("TCP address is empty (want host:port)")
	}
	if strings.TrimSpace(s) != s || strings.ContainsAny(s, " \t\r\n/;@") ||
		strings.HasPrefix(strings.ToLower(s), "sip:") || strings.HasPrefix(strings.ToLower(s), "sips:") {
		return "", fmt.Errorf("TCP address %q is not host:port", s)
	}
	host, port, err := splitHostPort(s, true)
	if err != nil {
		return "", fmt.Errorf("TCP address %q: %w", s, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// splitHostPort splits host[:port], checks both parts and returns the host without
// brackets. The port is 0 when it is optional and absent.
func splitHostPort(s string, portRequired bool) (string, int, error) {
	var host, portStr string
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return "", 0, errors.New("unterminated [ in IPv6 address")
		}
		host = s[1:end]
		after := s[end+1:]
		switch {
		case after == "":
		case strings.HasPrefix(after, ":"):
			portStr = after[1:]
			if portStr == "" {
				return "", 0, errors.New("empty port")
			}
		default:
			return "", 0, errors.New("unexpected text after ]")
		}
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return "", 0, fmt.Errorf("%q is not an IPv6 address", host)
		}
	default:
		if strings.Count(s, ":") > 1 {
			return "", 0, errors.New("IPv6 addresses must be in brackets, e.g. [::1]:5060")
		}
		var hasPort bool
		host, portStr, hasPort = strings.Cut(s, ":")
		if hasPort && portStr == "" {
			return "", 0, errors.New("empty port")
		}
		if err := checkHostname(host); err != nil {
			return "", 0, err
		}
	}
	if portStr == "" {
		if portRequired {
			return "", 0, errors.New("missing port (want host:port)")
		}
		return host, 0, nil
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || portStr[0] == '+' || portStr[0] == '-' {
		return "", 0, fmt.Errorf("port %q is not a number", portStr)
	}
	if port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %d out of range 1-65535", port)
	}
	return host, port, nil
}

// checkHostname accepts an IPv4 address or a DNS name (letters, digits, '-', '.', '_').
func checkHostname(h string) error {
	if h == "" {
		return errors.New("missing host")
	}
	if len(h) > 253 {
		return errors.New("host name too long")
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		// An all-numeric last label is a mistyped IPv4 address, never a DNS name.
		return fmt.Errorf("invalid IP address %q", h)
	}
	for _, label := range labels {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("invalid host name %q", h)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("invalid host name %q", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("invalid host name %q", h)
			}
		}
	}
	return nil
}
