// Package alert composes and sends Callplane's alert emails.
//
// It holds three things and nothing else: the SMTP settings (ParseSMTPURL,
// ParseRecipients), a Sender that delivers one Message over SMTP, and the
// composers that turn node health changes into the plain-text emails an
// operator reads at 3 a.m. (Compose, ComposeCapacity, ComposeTest). It does
// not touch the database: the Postgres outbox that decides what to send, when
// to retry and when to give up lives elsewhere and calls this package. The
// classifier IsPermanent tells it which of the two to do: give up on a
// permanent failure, retry every other one with backoff.
//
// Messages are built and handed over with github.com/go-mail/mail/v2, but the
// SMTP conversation is driven here on net/smtp instead of through mail.Dialer,
// for three reasons found in its v2.3.0 source: Dialer reads the server
// greeting (and, for implicit TLS, runs the handshake) before it sets any
// deadline, so a server that accepts the connection but never speaks hangs
// the caller forever; it takes no context; and it discards the server's final
// reply, which the portal's "send test email" button shows. The Sender
// implements mail.Sender and is driven through mail.Send, so MIME building,
// header encoding and envelope extraction are still go-mail's.
package alert
