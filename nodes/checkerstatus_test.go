package nodes_test

import (
	"errors"
	"testing"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

// Confirming a disruption needs one: without, it is a field error,
// audited as refused, and changes nothing; with one, it records who
// confirmed, with an audit row and an event, and the status shows it.
func TestConfirmDisruption(t *testing.T) {
	t.Parallel()
	e := setup(t)
	admin := nodes.Actor{Name: "admin@example.com", Addr: "192.0.2.7"}
	var fe problem.FieldErrors
	if _, err := e.svc.ConfirmDisruption(e.ctx, admin); !errors.As(err, &fe) || fe["disruption"] == "" {
		t.Fatalf("confirm without a disruption: %v; want a field error on disruption", err)
	}
	if e.count("SELECT count(*) FROM audit_log WHERE action = 'health.disruption.confirm' AND result = 'error' AND source_addr = '192.0.2.7'") != 1 {
		t.Fatal("the refusal is not audited")
	}
	st, err := e.svc.CheckerStatus(e.ctx)
	if err != nil || st.Disruption.Active || st.Disruption.Held() || st.LastActive() != nil {
		t.Fatalf("status with no checker and no disruption: %+v, %v", st, err)
	}

	e.exec("UPDATE health_disruption SET started_at = now() - interval '1 minute', failing = 3, total = 4, nodes = 'a, b, c' WHERE id = 1")
	if st, _ := e.svc.CheckerStatus(e.ctx); !st.Disruption.Held() || st.Disruption.Failing != 3 || st.Disruption.Nodes != "a, b, c" {
		t.Fatalf("status during the disruption: %+v", st.Disruption)
	}
	d, err := e.svc.ConfirmDisruption(e.ctx, admin)
	if err != nil || d.ConfirmedBy != admin.Name || d.ConfirmedAt == nil || d.Held() || d.Total != 4 {
		t.Fatalf("confirm: %+v, %v", d, err)
	}
	if e.count("SELECT count(*) FROM audit_log WHERE action = 'health.disruption.confirm' AND result = 'ok' AND actor = $1 AND detail LIKE '%3 of 4 nodes failing (a, b, c)%'", admin.Name) != 1 {
		t.Fatal("the confirmation is not audited")
	}
	if e.count("SELECT count(*) FROM events WHERE type = 'health' AND actor = $1 AND message LIKE 'Disruption confirmed by%'", admin.Name) != 1 {
		t.Fatal("no event for the confirmation")
	}
	if st, _ := e.svc.CheckerStatus(e.ctx); st.Disruption.Held() || st.Disruption.ConfirmedBy != admin.Name {
		t.Fatalf("status after the confirmation: %+v", st.Disruption)
	}
	if _, err := e.svc.ConfirmDisruption(e.ctx, admin); !errors.As(err, &fe) {
		t.Fatalf("a second confirmation: %v; want a field error", err)
	}
}
