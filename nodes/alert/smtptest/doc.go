// Package smtptest runs an in-process SMTP server on loopback for tests.
//
// It is built on github.com/emersion/go-smtp and records every message it
// accepts, decoded enough for assertions (subject, text body). Tests can make
// it refuse the next messages with a chosen reply code (FailNext) and take it
// down and up again on the same address (Stop, Restart) to exercise retry
// paths. It is used by this repository's unit tests and by the e2e suite,
// which points real binaries at URL().
package smtptest
