package server_test

import (
	"os"
	"testing"

	"github.com/callplane/callplane/db/dbtest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }
