package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"github.com/callplane/callplane/nodes/agentproto"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestValidateToken(t *testing.T) {
	t.Parallel()
	secret32 := strings.Repeat("a1", 16)
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", "cpj_ab12cd34." + secret32, true},
		{"long secret", "cpj_00000000." + secret32 + "zz9", true},
		{"empty", "", false},
		{"no prefix", "ab12cd34." + secret32, false},
		{"wrong prefix", "cpn_ab12cd34." + secret32, false},
		{"short id", "cpj_ab12cd3." + secret32, false},
		{"long id", "cpj_ab12cd345." + secret32, false},
		{"short secret", "cpj_ab12cd34." + secret32[:31], false},
		{"no dot", "cpj_ab12cd34" + secret32, false},
		{"upper case id", "cpj_AB12cd34." + secret32, false},
		{"upper case secret", "cpj_ab12cd34." + strings.ToUpper(secret32), false},
		{"symbol in secret", "cpj_ab12cd34." + secret32[:31] + "-", false},
		{"two dots", "cpj_ab12cd34." + secret32 + ".x", false},
		{"space", " cpj_ab12cd34." + secret32, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateToken(tt.token)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateToken = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Fatalf("error echoes the token: %v", err)
			}
			if id := TokenID(tt.token); tt.ok && id != tt.token[:12] || !tt.ok && id != "" {
				t.Fatalf("TokenID = %q", id)
			}
		})
	}
}

func TestPinOf(t *testing.T) {
	t.Parallel()
	cert := newCert(t)
	der, err := x509.MarshalPKIXPublicKey(cert.Leaf.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if got, want := agentproto.PinOf(cert.Leaf), "sha256:"+hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("PinOf = %s, want %s", got, want)
	}
	if err := agentproto.ValidatePin(agentproto.PinOf(cert.Leaf)); err != nil {
		t.Fatalf("ValidatePin(PinOf) = %v", err)
	}
	for _, bad := range []string{"", "sha256:", "sha256:abc", "sha1:" + strings.Repeat("0", 64),
		"sha256:" + strings.Repeat("g", 64), strings.Repeat("0", 64), "sha256:" + strings.Repeat("0", 66)} {
		if agentproto.ValidatePin(bad) == nil {
			t.Errorf("ValidatePin(%q) accepted", bad)
		}
	}
}

// joinedDir returns a state dir holding a real identity from a first join,
// plus an unrelated file, for tests that check a failed join changes nothing.
func joinedDir(t *testing.T, server, pin string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if _, err := Join(t.Context(), JoinOptions{Servers: []string{server}, Token: testToken, CAPin: pin, StateDir: dir, Version: "test"}); err != nil {
		t.Fatalf("first join: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("keep me"), 0o640); err != nil {
		t.Fatal(err)
	}
	return dir
}

// dirSnapshot records names, modes and contents of everything in dir.
func dirSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		v := info.Mode().String()
		if !d.IsDir() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		snap[path] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func equalSnapshots(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestJoinWritesState(t *testing.T) {
	t.Parallel()
	cm := newCallManager()
	srv, pin := startTLS(t, cm.handler(), nil, nil)
	dir := filepath.Join(t.TempDir(), "nested", "state")

	st, err := Join(t.Context(), JoinOptions{Servers: []string{srv.URL + "/"}, Token: testToken, CAPin: pin, StateDir: dir,
		Address: "10.0.0.5:5060", Version: "1.2.3"})
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if st.NodeID != 123 || st.NodeName != "media-1" || st.Kind != "media" || st.Server != srv.URL || st.CAPin != pin {
		t.Fatalf("state = %+v", st)
	}
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if len(cm.enrolls) != 1 || cm.enrolls[0] != (agentproto.EnrollRequest{Token: testToken, Address: "10.0.0.5:5060", Version: "1.2.3"}) {
		t.Fatalf("enrol requests = %+v", cm.enrolls)
	}

	info, err := os.Stat(filepath.Join(dir, StateFileName))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("state.json mode = %v, want 0600", info.Mode().Perm())
	}
	dinfo, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if dinfo.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, want 0700", dinfo.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only state.json (temp file left behind?)", len(entries))
	}
	loaded, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(loaded, st) {
		t.Fatalf("Load = %+v, want %+v", loaded, st)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, StateFileName))
	for _, field := range []string{`"node_id": 123`, `"node_name": "media-1"`, `"kind": "media"`, `"server"`, `"ca_pin"`, `"credential"`} {
		if !strings.Contains(string(raw), field) {
			t.Errorf("state.json lacks %s:\n%s", field, raw)
		}
	}
}

func TestJoinPinMismatch(t *testing.T) {
	t.Parallel()
	cm := newCallManager()
	other := newCert(t)
	srv, gotPin := startTLS(t, cm.handler(), &other, nil)
	wantPin := agentproto.PinOf(newCert(t).Leaf) // the key the operator expects
	dir := filepath.Join(t.TempDir(), "state")

	_, err := Join(t.Context(), JoinOptions{Servers: []string{srv.URL}, Token: testToken, CAPin: wantPin, StateDir: dir})
	var pe *agentproto.PinMismatchError
	if !errors.As(err, &pe) {
		t.Fatalf("Join error = %v, want a pin mismatch", err)
	}
	want := "server certificate does not match --ca-pin (got " + gotPin + ", want " + wantPin + ")"
	if err.Error() != want {
		t.Fatalf("error = %q\nwant    %q", err, want)
	}
	if requests, _, _, _ := cm.snapshot(); requests != 0 {
		t.Fatalf("server saw %d requests; the handshake must fail before any", requests)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("failed join left a state dir behind: %v", err)
	}

	// The matching pin proceeds over the same server.
	if _, err := Join(t.Context(), JoinOptions{Servers: []string{srv.URL}, Token: testToken, CAPin: gotPin, StateDir: dir}); err != nil {
		t.Fatalf("Join with the right pin: %v", err)
	}
	if requests, _, _, _ := cm.snapshot(); requests != 1 {
		t.Fatalf("server saw %d requests, want 1", requests)
	}
}

func TestJoinFailureLeavesStateDirUnchanged(t *testing.T) {
	t.Parallel()
	cm := newCallManager()
	srv, pin := startTLS(t, cm.handler(), nil, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "https://" + ln.Addr().String()
	ln.Close()
	otherPin := agentproto.PinOf(newCert(t).Leaf)
	wrongToken := "cpj_ab12cd34." + strings.Repeat("z", 40)

	tests := []struct {
		name  string
		opts  JoinOptions
		check func(error) bool
	}{
		{"refused token", JoinOptions{Servers: []string{srv.URL}, Token: wrongToken, CAPin: pin},
			func(err error) bool {
				return errors.Is(err, ErrJoinRefused) && strings.Contains(err.Error(), "invalid or expired join token")
			}},
		{"wrong pin", JoinOptions{Servers: []string{srv.URL}, Token: testToken, CAPin: otherPin},
			func(err error) bool { var pe *agentproto.PinMismatchError; return errors.As(err, &pe) }},
		{"unreachable", JoinOptions{Servers: []string{deadURL}, Token: testToken, CAPin: pin},
			func(err error) bool { return strings.Contains(err.Error(), "cannot reach server "+deadURL) }},
		{"malformed token", JoinOptions{Servers: []string{srv.URL}, Token: "cpj_short.x", CAPin: pin},
			func(err error) bool { return strings.Contains(err.Error(), "malformed join token") }},
		{"malformed pin", JoinOptions{Servers: []string{srv.URL}, Token: testToken, CAPin: "sha256:zz"},
			func(err error) bool { return strings.Contains(err.Error(), "invalid --ca-pin") }},
		{"plain http", JoinOptions{Servers: []string{"http://127.0.0.1:1"}, Token: testToken, CAPin: pin},
			func(err error) bool { return strings.Contains(err.Error(), "want https://") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := joinedDir(t, srv.URL, pin)
			before := dirSnapshot(t, dir)
			opts := tt.opts
			opts.StateDir = dir
			_, err := Join(context.Background(), opts)
			if err == nil || !tt.check(err) {
				t.Fatalf("Join error = %v", err)
			}
			if strings.Contains(err.Error(), opts.Token) && opts.Token != "" {
				t.Fatalf("error echoes the token: %v", err)
			}
			if after := dirSnapshot(t, dir); !equalSnapshots(before, after) {
				t.Fatalf("state dir changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestJoinUnwritableStateDirSpendsNoToken(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 {
		t.Skip("root can write anywhere")
	}
	cm := newCallManager()
	srv, pin := startTLS(t, cm.handler(), nil, nil)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	_, err := Join(t.Context(), JoinOptions{Servers: []string{srv.URL}, Token: testToken, CAPin: pin, StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("Join error = %v", err)
	}
	if requests, _, _, _ := cm.snapshot(); requests != 0 {
		t.Fatalf("token sent although the identity could not be saved")
	}
}

func TestJoinStateDirIsAFile(t *testing.T) {
	t.Parallel()
	cm := newCallManager()
	srv, pin := startTLS(t, cm.handler(), nil, nil)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Join(t.Context(), JoinOptions{Servers: []string{srv.URL}, Token: testToken, CAPin: pin, StateDir: file}); err == nil {
		t.Fatal("Join into a file succeeded")
	}
	if requests, _, _, _ := cm.snapshot(); requests != 0 {
		t.Fatalf("token sent although the identity could not be saved")
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	valid := `{"node_id":1,"node_name":"n","kind":"im","server":"https://127.0.0.1:8443","ca_pin":"sha256:` +
		strings.Repeat("ab", 32) + `","credential":"cpn_x.y"}`
	tests := []struct {
		name    string
		content string // "" = no file
		want    string
	}{
		{"missing", "", "not joined: run nodeagent join"},
		{"corrupt", `{"node_id": 1, "kind":`, "corrupt state file"},
		{"not json", "hello", "corrupt state file"},
		{"missing fields", `{"node_id":0,"node_name":"n","kind":"im","server":"https://x:1"}`, "missing node_id, ca_pin, credential"},
		{"bad kind", strings.Replace(valid, `"im"`, `"fax"`, 1), `unknown node kind "fax"`},
		{"bad server", strings.Replace(valid, "https://", "http://", 1), "invalid server URL"},
		{"bad pin", strings.Replace(valid, "sha256:", "md5:", 1), "malformed ca_pin"},
		{"bad credential", strings.Replace(valid, "cpn_x.y", "cpn x", 1), "malformed credential"},
		{"valid", valid, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tt.content != "" {
				if err := os.WriteFile(filepath.Join(dir, StateFileName), []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(dir)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %v, want it to contain %q", err, tt.want)
			}
			if tt.name == "missing" && !errors.Is(err, ErrNotJoined) {
				t.Fatalf("Load error %v is not ErrNotJoined", err)
			}
			if strings.Contains(err.Error(), "cpn_x.y") {
				t.Fatalf("error echoes the credential: %v", err)
			}
		})
	}
	if _, err := Load(""); err == nil {
		t.Fatal("Load(\"\") succeeded")
	}
}
