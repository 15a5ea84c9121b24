package server_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/servertest"
)

// Join commands list every call manager that serves the cluster's key:
// this instance first, then the others by id; not one that serves another
// key (the join command's one pin would refuse it) nor one not seen for
// over an hour.
func TestJoinCommandListsEveryInstance(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.URL(t)
	var keyDir string
	a := servertest.Start(t, servertest.Options{DatabaseURL: dbURL, InstanceID: "cm-a", Settings: servertest.NoProbes,
		Configure: func(c *server.Config) { keyDir = c.DataDir }})
	shared := func(c *server.Config) {
		c.TLSCert, c.TLSKey = filepath.Join(keyDir, "tls", "cert.pem"), filepath.Join(keyDir, "tls", "key.pem")
	}
	b := servertest.Start(t, servertest.Options{DatabaseURL: dbURL, InstanceID: "cm-b", Configure: shared})
	other := servertest.Start(t, servertest.Options{DatabaseURL: dbURL, InstanceID: "cm-c"}) // its own key

	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// An instance last seen two hours ago, with the cluster's key.
	if _, err := conn.Exec(context.Background(), `INSERT INTO settings (key, value, updated_at, updated_by)
		VALUES ('instance:cm-gone', '{"url":"https://gone.example:8443","pin":"`+a.Pin()+`"}', now() - interval '2 hours', 'test')`); err != nil {
		t.Fatal(err)
	}
	want := b.URL + "," + a.URL
	deadline := time.Now().Add(30 * time.Second)
	for b.JoinServer() != want {
		if time.Now().After(deadline) {
			t.Fatalf("B's join servers = %q, want %q (not %s: another key; not gone.example: stale)", b.JoinServer(), want, other.URL)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// callmanager token create (OpenAdmin) lists them too, its own URL first.
	cfg := server.Config{DatabaseURL: dbURL, DataDir: t.TempDir(), Listen: "127.0.0.1:1", PublicURL: a.URL}
	shared(&cfg)
	adm, err := server.OpenAdmin(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if adm.URL != a.URL+","+b.URL {
		t.Fatalf("admin join servers = %q, want %q", adm.URL, a.URL+","+b.URL)
	}
}
