package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/servertest"
)

// metricsText scrapes /metrics with a token and checks the exposition
// with promtool (Debian's prometheus package) when it is installed.
func metricsText(t *testing.T, in *servertest.Instance, token string) string {
	t.Helper()
	r, _ := api(t, in, http.MethodGet, "/metrics", token, nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", r.StatusCode, r.Body)
	}
	promtool(t, r.Body)
	return r.Body
}

func promtool(t *testing.T, body string) {
	t.Helper()
	path, err := osexec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (the CI script does)")
	}
	cmd := osexec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// sample returns the value of the series name{labels} in an exposition,
// or -1 when it is absent. labels are given as in the exposition, sorted
// by name: `kind="call",state="assigned"`.
func sample(body, name, labels string) float64 {
	series := name
	if labels != "" {
		series += "{" + labels + "}"
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

func zeroIfAbsent(v float64) float64 { return max(v, 0) }

// TestMetrics scrapes a real instance and checks that the series follow
// what happens: nodes registered and disabled, work placed and moved,
// requests served, maintenance. It does not run in parallel: the
// counters are process-wide and other tests would move them.
func TestMetrics(t *testing.T) {
	in := cluster(t, 10, "m1", "m2")
	ctx := context.Background()
	read, err := in.Nodes().CreateScopedAPIToken(ctx, testActor, nodes.APITokenInput{Name: "prometheus", Scope: nodes.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	admin := in.APIToken(t)

	if r, m := api(t, in, http.MethodGet, "/metrics", "", nil); r.StatusCode != http.StatusUnauthorized || m["error"] == nil {
		t.Fatalf("/metrics without a token: %d %s", r.StatusCode, r.Body)
	}
	if r, _ := api(t, in, http.MethodGet, "/metrics", "cpa_wrongwron.0123456789abcdefghijklmnopqrstuv", nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics with a bad token: %d", r.StatusCode)
	}

	before := metricsText(t, in, read.Token)
	if v := sample(before, "callplane_nodes", `admin_state="enabled",health="up",kind="media"`); v != 2 {
		t.Fatalf("nodes enabled/up media = %v, want 2", v)
	}
	if v := sample(before, "callplane_node_capacity", `kind="media",node="m1"`); v != 10 {
		t.Fatalf("capacity of m1 = %v", v)
	}
	if v := sample(before, "callplane_database_up", ""); v != 1 {
		t.Fatalf("database_up = %v", v)
	}
	for _, s := range []string{"callplane_probe_duration_seconds", "callplane_http_requests_total", "callplane_leader_epoch",
		"callplane_alerts", "callplane_longpoll_waiters", "callplane_work", "callplane_maintenance_windows", "go_goroutines"} {
		if !strings.Contains(before, "# TYPE "+s+" ") {
			t.Errorf("series %s missing", s)
		}
	}

	for i := range 6 {
		if r, _ := api(t, in, http.MethodPost, "/api/v1/work", admin, map[string]any{"kind": "call", "ref": fmt.Sprintf("c%d", i), "cost": 1}); r.StatusCode != http.StatusCreated {
			t.Fatalf("place: %d %s", r.StatusCode, r.Body)
		}
	}
	onM1 := count(t, in, "SELECT count(*) FROM work w JOIN nodes n ON n.id = w.node_id WHERE n.name = 'm1'")
	if r, _ := api(t, in, http.MethodPost, "/api/v1/nodes/m1/disable", admin, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("disable: %d %s", r.StatusCode, r.Body)
	}
	if _, err := in.Nodes().AddMaintenance(ctx, testActor, "m2", nodes.MaintenanceInput{End: time.Now().Add(time.Hour), Reason: "firmware"}); err != nil {
		t.Fatal(err)
	}

	after := metricsText(t, in, read.Token)
	delta := func(name, labels string) float64 {
		return zeroIfAbsent(sample(after, name, labels)) - zeroIfAbsent(sample(before, name, labels))
	}
	if v := sample(after, "callplane_work", `kind="call",state="assigned"`); v != 6 {
		t.Errorf("work call/assigned = %v, want 6", v)
	}
	if v := delta("callplane_placements_total", `cause="new",kind="call",outcome="placed"`); v != 6 {
		t.Errorf("placements_total grew by %v, want 6", v)
	}
	if v := delta("callplane_moves_total", `cause="disabled",kind="call",outcome="moved"`); v != float64(onM1) || onM1 == 0 {
		t.Errorf("moves_total (disabled) grew by %v, want %d", v, onM1)
	}
	if v := delta("callplane_http_requests_total", `code="201",method="POST",route="/api/v1/work"`); v != 6 {
		t.Errorf("http_requests_total POST /api/v1/work 201 grew by %v, want 6", v)
	}
	if v := sample(after, "callplane_nodes", `admin_state="disabled",health="up",kind="media"`); v != 1 {
		t.Errorf("nodes disabled/up media = %v, want 1", v)
	}
	if v := sample(after, "callplane_node_used", `kind="media",node="m2"`); v != 6 {
		t.Errorf("used of m2 = %v, want 6", v)
	}
	if v := sample(after, "callplane_node_in_maintenance", `kind="media",node="m2"`); v != 1 {
		t.Errorf("m2 in maintenance = %v, want 1", v)
	}
	if v := sample(after, "callplane_maintenance_windows", `phase="active"`); v != 1 {
		t.Errorf("active maintenance windows = %v, want 1", v)
	}
	dashboardSeriesExist(t)
	// No series names a work item.
	if strings.Contains(after, `"c1"`) {
		t.Error("a work ref appears in the metrics")
	}

	// The instance leads within the lease time; is_leader says so.
	deadline := time.Now().Add(30 * time.Second)
	for sample(metricsText(t, in, read.Token), "callplane_is_leader", "") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("is_leader never became 1")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMetricsListen serves /metrics without a token on --metrics-listen,
// and nothing else there.
func TestMetricsListen(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes, Configure: func(c *server.Config) {
		c.MetricsListen = "127.0.0.1:0"
	}})
	addr := in.MetricsAddr()
	if addr == "" {
		t.Fatal("no metrics listener")
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "callplane_database_up 1") {
		t.Fatalf("metrics listener: %d\n%.500s", resp.StatusCode, body)
	}
	promtool(t, string(body))
	resp, err = http.Get("http://" + addr + "/api/v1/nodes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the metrics listener serves the API: %d", resp.StatusCode)
	}
}

// dashboardSeriesExist checks that every callplane_ series the sample
// Grafana dashboard queries is one the call manager exposes.
func dashboardSeriesExist(t *testing.T) {
	t.Helper()
	raw, err := os.ReadFile("../assets/grafana/callplane.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	name := regexp.MustCompile(`callplane_[a-z_]+`)
	exprs := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs++
			for _, n := range name.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(n, "_bucket")
				if !slices.Contains(server.MetricNames(), base) {
					t.Errorf("dashboard panel %q queries %s, which /metrics does not expose", p.Title, n)
				}
			}
		}
	}
	if exprs < 10 {
		t.Fatalf("dashboard has %d queries", exprs)
	}
}
