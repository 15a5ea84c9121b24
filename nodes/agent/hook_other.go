//go:build !unix

package agent

import "os/exec"

// setProcessGroup is a no-op where process groups do not exist; the timeout
// then kills the shell only.
func setProcessGroup(*exec.Cmd) {}
