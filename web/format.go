package web

import (
	"strconv"
	"time"
)

func i64(i int64) string { return strconv.FormatInt(i, 10) }

func itoa(i int) string { return strconv.Itoa(i) }

// fmtTime shows a time in UTC, to the second.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// fmtTimePtr shows an optional time, or "never".
func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return fmtTime(*t)
}

// ago shows how long ago an optional time was.
func ago(t *time.Time) string {
	if t == nil {
		return "never"
	}
	d := time.Since(*t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h ago"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d ago"
}

// plural counts things in words: "1 node", "3 nodes".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return i64(n) + " " + noun + "s"
}
