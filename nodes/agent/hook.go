package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes/agentproto"
)

// Hook actions, passed as CALLPLANE_ACTION.
const (
	actionStart = "start"
	actionStop  = "stop"
)

// hookOutputLimit bounds how much of one hook run's output reaches the log.
const hookOutputLimit = 64 << 10

// runHook runs the --on-assign command for one assignment through
// /bin/sh -c, with the assignment in its environment, its output logged line
// by line, and its whole process group killed at the timeout. An empty
// command succeeds at once: the agent then only tracks and acks the work.
func runHook(ctx context.Context, log *slog.Logger, command string, timeout time.Duration, node, action string, a agentproto.Assignment) error {
	if command == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(),
		"CALLPLANE_ACTION="+action,
		"CALLPLANE_ASSIGNMENT_ID="+strconv.FormatInt(a.ID, 10),
		"CALLPLANE_REF="+a.Ref,
		"CALLPLANE_KIND="+a.Kind,
		"CALLPLANE_COST="+strconv.FormatInt(int64(a.Cost), 10),
		"CALLPLANE_EPOCH="+strconv.FormatInt(a.Epoch, 10),
		"CALLPLANE_NODE="+node,
		"CALLPLANE_CALL_ID="+a.CallID,
		"CALLPLANE_FROM="+a.From,
		"CALLPLANE_TO="+a.To,
	)
	out := &lineLogger{log: log.With("hook", action, "assignment", a.ID, "ref", a.Ref), limit: hookOutputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	setProcessGroup(cmd)
	// A grandchild that keeps the output pipe open must not hold the agent.
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	out.flush()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("hook %s timed out after %s", action, timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("hook %s failed: %s", action, ee.ProcessState)
	}
	if err != nil {
		return fmt.Errorf("hook %s: %w", action, err)
	}
	log.Debug("hook done", "hook", action, "assignment", a.ID, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// lineLogger writes each line a hook prints as one log record.
type lineLogger struct {
	log     *slog.Logger
	limit   int
	mu      sync.Mutex
	buf     []byte
	written int
	dropped bool
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	if l.written+len(p) > l.limit {
		p = p[:max(0, l.limit-l.written)]
		if !l.dropped {
			l.dropped = true
			defer l.log.Warn("hook output truncated", "limit_bytes", l.limit)
		}
	}
	l.written += len(p)
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	return n, nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (l *lineLogger) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(line) > 0 {
		l.log.Info("hook output", "line", string(line))
	}
}
