package web

import (
	"encoding/base64"
	"encoding/csv"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

// The long tables (/work, /events, /audit) share one way of sorting,
// paging and exporting: the state lives in the URL (filters, sort, dir,
// after), so a view can be shared, bookmarked and reached again with the
// back button; pages follow a keyset cursor, so a page is as cheap deep
// in the table as at its start and no rows are capped away.

// pageSize is the number of rows of one table page.
const pageSize = 50

// csvBatch is how many rows a CSV export reads at a time.
const csvBatch = 1000

// tableNav is a table's place: its path, the region htmx swaps, the
// filters and sort of the URL, and the cursors of this and the next page.
type tableNav struct {
	Path    string
	Target  string // id of the swapped region
	Filters url.Values
	Sort    string
	Desc    bool
	After   string // cursor of this page ("" = first page)
	Next    string // cursor of the next page ("" = this is the last)
	Rows    int    // rows on this page
}

// pageFrom reads the sort, direction and cursor of a table from the URL.
// An unknown sort column falls back to time; a cursor that does not parse
// is a bad request.
func pageFrom(q url.Values, sorts []string) (tableNav, nodes.Page, error) {
	nav := tableNav{Sort: q.Get("sort"), After: q.Get("after")}
	if !slices.Contains(sorts, nav.Sort) {
		nav.Sort = "time"
	}
	switch q.Get("dir") {
	case "asc":
		nav.Desc = false
	case "desc":
		nav.Desc = true
	default:
		nav.Desc = nav.Sort == "time"
	}
	p := nodes.Page{Sort: nav.Sort, Desc: nav.Desc, Limit: pageSize + 1}
	if nav.After != "" {
		key, id, ok := decodeCursor(nav.After)
		if !ok {
			return nav, p, fieldError("after", "the page link is not valid: start again from the first page")
		}
		p.AfterKey, p.AfterID = key, id
	}
	return nav, p, nil
}

func fieldError(field, msg string) error { return problem.FieldErrors{field: msg} }

// encodeCursor makes the opaque cursor of a row: its sort key and id.
func encodeCursor(key string, id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(id, 10) + ":" + key))
}

func decodeCursor(s string) (string, int64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return "", 0, false
	}
	idStr, key, ok := strings.Cut(string(b), ":")
	id, err := strconv.ParseInt(idStr, 10, 64)
	if !ok || err != nil || id <= 0 {
		return "", 0, false
	}
	return key, id, true
}

// trim cuts a page fetched with one row extra to pageSize and sets the
// cursor of the next page from its last row.
func trim[T any](nav *tableNav, rows []T, cursor func(T) (string, int64)) []T {
	if len(rows) > pageSize {
		rows = rows[:pageSize]
		nav.Next = encodeCursor(cursor(rows[len(rows)-1]))
	}
	nav.Rows = len(rows)
	return rows
}

func (n tableNav) url(mod func(v url.Values)) string {
	v := url.Values{}
	for k, vs := range n.Filters {
		for _, s := range vs {
			if s != "" {
				v.Add(k, s)
			}
		}
	}
	if n.Sort != "time" || !n.Desc {
		v.Set("sort", n.Sort)
		v.Set("dir", dirName(n.Desc))
	}
	if mod != nil {
		mod(v)
	}
	if len(v) == 0 {
		return n.Path
	}
	return n.Path + "?" + v.Encode()
}

func dirName(desc bool) string {
	if desc {
		return "desc"
	}
	return "asc"
}

// LiveURL is what the live region polls: this page, as shown.
func (n tableNav) LiveURL() string {
	return n.url(func(v url.Values) {
		if n.After != "" {
			v.Set("after", n.After)
		}
	})
}

// FirstURL is the first page with the same filters and sort.
func (n tableNav) FirstURL() string { return n.url(nil) }

// NextURL is the next page.
func (n tableNav) NextURL() string {
	return n.url(func(v url.Values) { v.Set("after", n.Next) })
}

// CSVURL exports every row of the filters and sort as CSV.
func (n tableNav) CSVURL() string {
	return n.url(func(v url.Values) { v.Set("format", "csv") })
}

// SortURL sorts by col: the other direction when it is the sort already,
// newest first for time and ascending for the others.
func (n tableNav) SortURL(col string) string {
	m := n
	if n.Sort == col {
		m.Desc = !n.Desc
	} else {
		m.Sort, m.Desc = col, col == "time"
	}
	return m.url(nil)
}

// SortState is the aria-sort value of a column header.
func (n tableNav) SortState(col string) string {
	switch {
	case n.Sort != col:
		return "none"
	case n.Desc:
		return "descending"
	}
	return "ascending"
}

// Arrow marks the sorted column.
func (n tableNav) Arrow(col string) string {
	switch n.SortState(col) {
	case "descending":
		return "▼"
	case "ascending":
		return "▲"
	}
	return ""
}

func wantsCSV(r *http.Request) bool { return r.URL.Query().Get("format") == "csv" }

// csvExport streams a CSV download. fetch reads one batch after the given
// cursor and returns its rows as records and the cursor of its last row
// (id 0 when the batch was the last).
type csvExport struct {
	w   *csv.Writer
	err error
}

func startCSV(w http.ResponseWriter, name string, header []string) *csvExport {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+"-"+time.Now().UTC().Format("20060102T150405Z")+`.csv"`)
	c := &csvExport{w: csv.NewWriter(w)}
	c.row(header...)
	return c
}

// row writes one record. A cell that a spreadsheet would read as a
// formula is prefixed with an apostrophe (CSV injection).
func (c *csvExport) row(cells ...string) {
	if c.err != nil {
		return
	}
	for i, s := range cells {
		if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
			cells[i] = "'" + s
		}
	}
	c.err = c.w.Write(cells)
}

func (c *csvExport) close() error {
	c.w.Flush()
	if c.err != nil {
		return c.err
	}
	return c.w.Error()
}

// csvTime is the time format of the exports (RFC 3339, UTC).
func csvTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// exportPages reads every row matching the filters and sort, from the
// first, in batches, and hands each to write.
func exportPages[T any](p nodes.Page, fetch func(nodes.Page) ([]T, error), cursor func(T) (string, int64), write func(T)) error {
	p.Limit, p.AfterKey, p.AfterID = csvBatch, "", 0
	for {
		rows, err := fetch(p)
		if err != nil {
			return err
		}
		for _, r := range rows {
			write(r)
		}
		if len(rows) < csvBatch {
			return nil
		}
		p.AfterKey, p.AfterID = cursor(rows[len(rows)-1])
	}
}
