// Package assets embeds the portal's static files: htmx (vendored from the
// npm package htmx.org at a pinned version, see VERSIONS), the stylesheet
// and the small script that configures the page without inline code.
package assets

import "embed"

// FS holds the static files, served under /assets/.
//
//go:embed *.js *.css *.svg VERSIONS
var FS embed.FS
