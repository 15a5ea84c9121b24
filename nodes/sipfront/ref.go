package sipfront

import (
	"crypto/sha256"
	"encoding/hex"
)

// CallRef derives a call's work ref from its Call-ID and From tag: the
// pair names the caller's side of the dialog (RFC 3261 section 12), and
// any instance derives the same ref from an in-dialog request. Both come
// from the network and may hold any characters, so the ref is a hash,
// within the safe ref alphabet: "sip:" and 32 hex digits (128 bits).
func CallRef(callID, fromTag string) string {
	h := sha256.New()
	h.Write([]byte(callID))
	h.Write([]byte{0})
	h.Write([]byte(fromTag))
	var sum [sha256.Size]byte
	return "sip:" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}
