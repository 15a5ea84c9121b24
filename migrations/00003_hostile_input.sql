-- +goose Up
-- Addresses an account has signed in from: the account-wide sign-in
-- slowdown does not apply to them, so others guessing an account's
-- password cannot keep its owner out (NIST SP 800-63B 5.2.2).
CREATE TABLE login_known (
    key     text PRIMARY KEY,
    last_ok timestamptz NOT NULL DEFAULT now()
);

-- The alert outbox's sending mark: set and committed before an email is
-- handed to SMTP, cleared when the outcome is recorded. A row still marked
-- after the send timeout was being sent by an instance that stopped: the
-- next leader does not send it again (the Message-ID was the same, but
-- not every mailbox drops duplicates).
ALTER TABLE alerts ADD COLUMN sending_since timestamptz;

-- +goose Down
ALTER TABLE alerts DROP COLUMN sending_since;
DROP TABLE login_known;
