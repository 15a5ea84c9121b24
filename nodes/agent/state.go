package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/callplane/callplane/nodes/agentproto"
)

// StateFileName is the name of the identity file inside the state directory.
const StateFileName = "state.json"

// ErrNotJoined is returned by Load when the state directory holds no
// identity yet.
var ErrNotJoined = errors.New("not joined: run nodeagent join")

// nodeKinds are the node kinds of DESIGN.md; the kind selects the probe
// endpoint the agent serves.
var nodeKinds = map[string]bool{"media": true, "ivr": true, "queue": true, "meeting": true, "im": true}

// State is the node identity that join stores and run uses: who the node is,
// which call managers it belongs to, how they are recognised, and the
// node's credential. The file holding it is readable by its owner only.
type State struct {
	NodeID   int64  `json:"node_id"`
	NodeName string `json:"node_name"`
	Kind     string `json:"kind"`
	// Servers are the URLs of every call manager of the cluster, in the
	// order the agent tries them.
	Servers []string `json:"servers"`
	// Server is the first of Servers, written for agents older than the
	// list; a file without "servers" is read from it.
	Server     string    `json:"server,omitempty"`
	CAPin      string    `json:"ca_pin"`
	Credential string    `json:"credential"`
	JoinedAt   time.Time `json:"joined_at,omitzero"`
}

// LogValue keeps the credential out of logs when a State is logged whole.
func (s *State) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("node_id", s.NodeID),
		slog.String("node_name", s.NodeName),
		slog.String("kind", s.Kind),
		slog.String("servers", strings.Join(s.Servers, ",")),
	)
}

// Load reads and checks the identity stored in dir. Its errors say what is
// wrong in words an operator can act on: not joined yet, a corrupt file, or
// missing fields.
func Load(dir string) (*State, error) {
	if dir == "" {
		return nil, errors.New("no state dir given (--state-dir or NODEAGENT_STATE_DIR)")
	}
	path := filepath.Join(dir, StateFileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (no %s)", ErrNotJoined, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("corrupt state file %s (re-join to recreate it): %v", path, err)
	}
	if len(st.Servers) == 0 && st.Server != "" {
		st.Servers = []string{st.Server} // written by an agent older than the list
	}
	if err := st.validate(); err != nil {
		return nil, fmt.Errorf("invalid state file %s (re-join to recreate it): %w", path, err)
	}
	return &st, nil
}

// validate checks s and normalises its server list.
func (s *State) validate() error {
	if len(s.Servers) == 0 && s.Server != "" {
		s.Servers = []string{s.Server}
	}
	var missing []string
	if s.NodeID <= 0 {
		missing = append(missing, "node_id")
	}
	for _, f := range []struct{ name, v string }{
		{"node_name", s.NodeName}, {"kind", s.Kind}, {"servers", strings.Join(s.Servers, "")},
		{"ca_pin", s.CAPin}, {"credential", s.Credential},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	if !nodeKinds[s.Kind] {
		return fmt.Errorf("unknown node kind %q", s.Kind)
	}
	servers, err := ParseServers(s.Servers)
	if err != nil {
		return err
	}
	s.Servers, s.Server = servers, servers[0]
	if err := agentproto.ValidatePin(s.CAPin); err != nil {
		return errors.New("malformed ca_pin")
	}
	if !validCredential(s.Credential) {
		return errors.New("malformed credential")
	}
	return nil
}

// validCredential accepts any printable, space-free credential: it only has
// to survive an Authorization header; its exact shape is the server's.
func validCredential(c string) bool {
	if c == "" {
		return false
	}
	for i := 0; i < len(c); i++ {
		if c[i] <= ' ' || c[i] >= 0x7f {
			return false
		}
	}
	return true
}

// parseServerURL checks that server is an https URL without query or
// fragment and returns it without a trailing slash.
func parseServerURL(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("invalid server URL %q: want https://HOST:PORT", server)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// ParseServers checks a list of call manager URLs as given to --server
// (each entry may itself be a comma-separated list) and returns them
// normalised, without duplicates, in the order given.
func ParseServers(list []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, entry := range list {
		for _, raw := range strings.Split(entry, ",") {
			raw = strings.TrimSpace(raw)
			if raw == "" {
				continue
			}
			u, err := parseServerURL(raw)
			if err != nil {
				return nil, err
			}
			if !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no server URL given: want https://HOST:PORT")
	}
	return out, nil
}

// pendingState is a state file being written: the temporary file exists
// (which proves the directory is writable before a one-time token is spent)
// and becomes state.json only on commit.
type pendingState struct {
	dir        string
	f          *os.File
	createdDir bool
}

// beginStateWrite creates dir (mode 0700) when missing and a temporary file
// in it. abort undoes both, leaving an existing directory as it was.
func beginStateWrite(dir string) (*pendingState, error) {
	if dir == "" {
		return nil, errors.New("no state dir given (--state-dir or NODEAGENT_STATE_DIR)")
	}
	p := &pendingState{dir: dir}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		p.createdDir = true
	} else if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".state-*.tmp") // CreateTemp uses mode 0600
	if err != nil {
		p.abort()
		return nil, fmt.Errorf("state dir %s is not writable: %w", dir, err)
	}
	p.f = f
	return p, nil
}

// commit writes st to the temporary file, flushes it to disk and renames it
// over state.json, so a crash leaves either the old or the new identity,
// never a torn file.
func (p *pendingState) commit(st *State) (err error) {
	defer func() {
		if err != nil {
			p.abort()
		}
	}()
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	data = append(data, '\n')
	if err := p.f.Chmod(0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if _, err := p.f.Write(data); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(p.f.Name(), filepath.Join(p.dir, StateFileName)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	// The rename is durable only once the directory itself is synced.
	if d, err := os.Open(p.dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// abort removes the temporary file and, when beginStateWrite created the
// state directory, the (then empty) directory.
func (p *pendingState) abort() {
	if p.f != nil {
		_ = p.f.Close()
		_ = os.Remove(p.f.Name())
	}
	if p.createdDir {
		_ = os.Remove(p.dir)
	}
}
