package agent

import (
	"context"

	"github.com/callplane/callplane/nodes/probe"
)

// startProbe serves the probe endpoint of a node kind (SIP for media, ivr
// and queue, WebRTC for meeting, TCP for im) on listen, so the call
// manager's health checker has something to probe when no real server
// answers there. It returns the endpoint's close function and address.
func startProbe(ctx context.Context, kind, listen string) (func() error, string, error) {
	ep, err := probe.NewEndpoint(ctx, kind, listen)
	if err != nil {
		return nil, "", err
	}
	return ep.Close, ep.Address(), nil
}
