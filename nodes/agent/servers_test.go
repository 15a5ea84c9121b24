package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseServers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{in: []string{"https://a:1"}, want: []string{"https://a:1"}},
		{in: []string{"https://a:1/, https://b:2", "https://c:3", "https://a:1"}, want: []string{"https://a:1", "https://b:2", "https://c:3"}},
		{in: []string{"https://a:1,,"}, want: []string{"https://a:1"}},
		{in: nil, wantErr: "no server URL"},
		{in: []string{" , "}, wantErr: "no server URL"},
		{in: []string{"https://a:1,http://b:2"}, wantErr: `invalid server URL "http://b:2"`},
	}
	for _, tt := range tests {
		got, err := ParseServers(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseServers(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseServers(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// A state file written before agents knew several servers has only
// "server"; it still loads, as a list of one.
func TestLoadStateWithOneServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	legacy := `{"node_id": 7, "node_name": "m1", "kind": "media", "server": "https://cm:8443",
		"ca_pin": "sha256:` + strings.Repeat("ab", 32) + `", "credential": "` + testCredential + `"}`
	if err := os.WriteFile(filepath.Join(dir, StateFileName), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Servers, []string{"https://cm:8443"}) {
		t.Fatalf("servers = %q", st.Servers)
	}
}
