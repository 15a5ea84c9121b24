package agentproto

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

const pinPrefix = "sha256:"

// PinOf returns the CA pin of cert: "sha256:" followed by the lowercase hex
// SHA-256 of its DER-encoded SubjectPublicKeyInfo. Pinning the public key
// rather than the whole certificate lets the call manager renew its
// certificate with the same key without re-enrolling every node.
func PinOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + hex.EncodeToString(sum[:])
}

// ValidatePin reports whether pin has the form "sha256:" followed by 64 hex
// digits, as printed by the portal and by PinOf.
func ValidatePin(pin string) error {
	_, err := ParsePin(pin)
	return err
}

// ParsePin returns the 32 digest bytes of a well-formed pin.
func ParsePin(pin string) ([]byte, error) {
	rest, ok := strings.CutPrefix(pin, pinPrefix)
	if !ok || len(rest) != 2*sha256.Size {
		return nil, errors.New(`invalid --ca-pin: want "sha256:" followed by 64 hex digits`)
	}
	sum, err := hex.DecodeString(rest)
	if err != nil {
		return nil, errors.New(`invalid --ca-pin: want "sha256:" followed by 64 hex digits`)
	}
	return sum, nil
}

// PinMismatchError is the error of a TLS handshake with a server whose
// certificate does not carry the pinned public key. The handshake is aborted
// before any HTTP request is written.
type PinMismatchError struct {
	Got  string // pin of the certificate the server presented
	Want string // pin the agent was configured with
}

// Error names both pins so the operator can tell a typo from a re-keyed or
// impostor server.
func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("server certificate does not match --ca-pin (got %s, want %s)", e.Got, e.Want)
}

// PinnedTLSConfig returns a client TLS configuration that trusts exactly the
// server whose leaf certificate carries the pinned public key. Chain
// verification is switched off because the call manager's certificate is
// normally self-signed; VerifyConnection runs during the handshake even so,
// which makes the pin the only thing trusted.
func PinnedTLSConfig(pin string) (*tls.Config, error) {
	want, err := ParsePin(pin)
	if err != nil {
		return nil, err
	}
	wantPin := pinPrefix + hex.EncodeToString(want)
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server presented no certificate")
			}
			leaf := cs.PeerCertificates[0]
			got := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return &PinMismatchError{Got: PinOf(leaf), Want: wantPin}
			}
			return nil
		},
	}, nil
}
