//go:build unix

package agent

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the hook in its own process group and makes the
// timeout kill the whole group, so `sh -c "sleep 100"` leaves no orphan.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
