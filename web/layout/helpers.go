// Package layout holds the portal's page frame and the widgets every page
// shares: form fields, badges, alerts and error pages.
package layout

import "strconv"

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func itoa(i int) string { return strconv.Itoa(i) }
