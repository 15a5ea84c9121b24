package web

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
)

// benchNodes builds n nodes as the node list shows them.
func benchNodes(n int) []nodes.Node {
	now := time.Now()
	list := make([]nodes.Node, n)
	for i := range list {
		hb := now.Add(-time.Duration(i%1000) * time.Millisecond)
		list[i] = nodes.Node{
			ID: int64(i + 1), Name: fmt.Sprintf("media-%04d", i), Kind: "media", Address: fmt.Sprintf("10.0.%d.%d:5060", i/250, i%250),
			Capacity: 100, Weight: 100, Region: "eu-west", AdminState: "enabled", Health: "up", HealthChangedAt: now,
			Used: 20, ReportedLoad: 20, AgentVersion: "1.0.0", LastHeartbeatAt: &hb, EnrolledAt: &now,
		}
	}
	return list
}

// BenchmarkNodesTableRender renders the htmx partial of /nodes (the live
// table the portal polls) for 500 nodes.
func BenchmarkNodesTableRender(b *testing.B) {
	v := nodesView{Nodes: benchNodes(500), CanChange: true}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := nodesTable(v).Render(ctx, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
