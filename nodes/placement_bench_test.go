package nodes_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/localpg"
	"github.com/callplane/callplane/nodes"
)

// BenchmarkPlacement measures the hot paths against a real Postgres of
// its own (fsync off: this is the statements' cost, not the disk's; the
// load driver in e2e/bench measures with synchronous commits): placing a
// call on 500 media nodes, serially and from concurrent clients, reading
// a node's desired set as a long-poll answer does, and authenticating an
// agent's credential.
func BenchmarkPlacement(b *testing.B) {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "cpbench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(root) })
	// The server may run as the postgres user, which must enter the dir.
	if err := os.Chmod(root, 0o755); err != nil {
		b.Fatal(err)
	}
	pg, err := localpg.Start(ctx, localpg.Options{Dir: filepath.Join(root, "pg"), Fast: true})
	if err != nil {
		b.Skipf("no local postgres: %v", err)
	}
	b.Cleanup(func() { pg.Stop() })
	if err := pg.EnsureDatabase(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	pool, err := db.Open(ctx, pg.URL("bench"), 20)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if err := db.Migrate(ctx, pool, nil); err != nil {
		b.Fatal(err)
	}
	svc := nodes.NewService(pool, nil)
	hb := svc.NewHeartbeats(0)
	var firstID int64
	for i := range 500 {
		n, err := svc.AddNode(ctx, nodes.ActorCLI, nodes.NodeInput{Name: fmt.Sprintf("media-%03d", i), Kind: nodes.KindMedia,
			Address: "127.0.0.1:5060", Capacity: "100000", Weight: "100"})
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			firstID = n.ID
		}
		hb.Record(n.ID, 0, "bench") // first heartbeat: the node is up
	}
	hb.Flush(ctx)
	jt, err := svc.CreateJoinToken(ctx, nodes.ActorCLI, "media-000", 0)
	if err != nil {
		b.Fatal(err)
	}
	enrolled, err := svc.Enroll(ctx, nodes.EnrollRequest{Token: jt.Token, RemoteAddr: "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	place := func(b *testing.B) {
		p, err := svc.PlaceWork(ctx, nodes.ActorCLI, nodes.WorkInput{Kind: nodes.WorkCall, Ref: "b-" + strconv.FormatInt(seq.Add(1), 10), Cost: 1})
		if err != nil || p.Node == "" {
			b.Fatalf("place: %v (%+v)", err, p)
		}
	}
	b.Run("PlaceWork", func(b *testing.B) {
		for b.Loop() {
			place(b)
		}
	})
	b.Run("PlaceWorkParallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				place(b)
			}
		})
	})
	b.Run("Desired", func(b *testing.B) {
		for b.Loop() {
			if _, err := svc.Desired(ctx, firstID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AuthNode", func(b *testing.B) {
		for b.Loop() {
			if _, err := svc.AuthNode(ctx, enrolled.Credential); err != nil {
				b.Fatal(err)
			}
		}
	})
}
