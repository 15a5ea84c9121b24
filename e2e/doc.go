// Package e2e holds Callplane's end-to-end tests: they build the real
// callmanager and nodeagent binaries, start them as separate processes on
// loopback against a throwaway Postgres and an in-process SMTP sink, and
// drive Debian's Chromium with chromedp through the administrator's
// journey. The tests live in _test.go files; e2e/demo is the program
// behind "make demo".
package e2e
