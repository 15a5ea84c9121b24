package db_test

import "github.com/callplane/callplane/db/dbsqlc"

func dbsqlcUser(email string) dbsqlc.UserInsertParams {
	return dbsqlc.UserInsertParams{Email: email, PasswordHash: "x", Role: "admin"}
}
