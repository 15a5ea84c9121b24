package web

import (
	"errors"
	"net/http"

	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/nodes/settings"
)

// retentionView is the retention section of the settings page.
type retentionView struct {
	Values  map[string]string
	Errors  map[string]string
	CanEdit bool
	Notice  string
}

func (h *Handler) retentionView(r *http.Request) (retentionView, error) {
	ret, err := h.Settings.Retention(r.Context())
	if err != nil {
		return retentionView{}, err
	}
	v := retentionView{Values: map[string]string{}, Errors: map[string]string{}, CanEdit: canChange(r)}
	for _, k := range settings.RetentionKeys {
		v.Values[k] = settings.FormatRetention(ret[k])
	}
	return v, nil
}

// retentionSave stores the retention periods. Over htmx it answers with
// the section alone; a plain post gets the whole settings page.
func (h *Handler) retentionSave(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	form := map[string]string{}
	for _, k := range settings.RetentionKeys {
		form[k] = r.PostFormValue(k)
	}
	ctx := r.Context()
	_, err := h.Settings.SaveRetention(ctx, actor(r), form)
	var fe problem.FieldErrors
	if err != nil && !errors.As(err, &fe) {
		return err
	}
	rv, verr := h.retentionView(r)
	if verr != nil {
		return verr
	}
	status := http.StatusOK
	if fe != nil {
		h.Nodes.AuditFailure(ctx, actor(r), "settings.retention", "settings", fe)
		rv.Values, rv.Errors, status = form, fe, http.StatusUnprocessableEntity
	} else {
		rv.Notice = "Retention saved. The leader prunes older history within ten minutes."
	}
	if isHTMX(r) {
		return h.renderStatus(w, r, status, "Settings", "settings", retentionSection(rv))
	}
	st, err := h.Settings.Load(ctx)
	if err != nil {
		return err
	}
	v, err := h.settingsView(r, st)
	if err != nil {
		return err
	}
	v.Retention = rv
	return h.renderStatus(w, r, status, "Settings", "settings", settingsBody(v))
}
