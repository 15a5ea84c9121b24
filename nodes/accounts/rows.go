package accounts

import "github.com/callplane/callplane/db/dbsqlc"

// Rows of the users and sessions tables become domain values here and
// nowhere else: the rest of Callplane never sees a dbsqlc account row.

func accountFromRow(r dbsqlc.User) Account {
	return Account{User: User{ID: r.ID, Email: r.Email, Role: r.Role}, CreatedAt: r.CreatedAt, DisabledAt: r.DisabledAt}
}

func sessionFromRow(r dbsqlc.SessionListByUserRow, current []byte) Session {
	return Session{Current: string(r.IDHash) == string(current), CreatedAt: r.CreatedAt,
		LastSeenAt: r.LastSeenAt, SourceAddr: r.SourceAddr, UserAgent: r.UserAgent}
}

func userFromSessionRow(r dbsqlc.SessionGetRow) User {
	return User{ID: r.UserID, Email: r.Email, Role: r.Role}
}
