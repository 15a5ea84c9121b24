package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/server/metrics"
	"github.com/callplane/callplane/web"
)

// agentRoutes serves the agent API (package agentproto) under
// agentproto.Prefix.
func (s *Server) agentRoutes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(agentFeatures)
		r.Post(agentproto.EnrollPath, s.enroll)
		// A disabled node keeps heartbeating, so its real health shows and
		// enabling it is no false recovery; it gets no work (403 below).
		r.With(s.nodeAuthAllowDisabled).Post(agentproto.HeartbeatPath, s.heartbeat)
		r.Group(func(r chi.Router) {
			r.Use(s.nodeAuth)
			r.Get(agentproto.AssignmentsPath, s.assignments)
			r.Post(agentproto.AssignmentsPath, s.assignments) // with the acks the agent owes
			r.Post(agentproto.AckBatchPath, s.ackBatch)
			r.Post(agentproto.AckPattern, s.ack)
		})
	})
}

// agentFeatures says on every answer what this call manager takes beyond
// the oldest agent API (agentproto.FeaturesHeader).
func agentFeatures(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(agentproto.FeaturesHeader, agentFeatureList)
		next.ServeHTTP(w, r)
	})
}

// agentFeatureList is this call manager's agentproto.FeaturesHeader.
var agentFeatureList = agentproto.FeatureAckStream + ", " + agentproto.FeatureBeatStream

type nodeAuthKey struct{}

func nodeFrom(ctx context.Context) nodes.NodeAuth {
	a, _ := ctx.Value(nodeAuthKey{}).(nodes.NodeAuth)
	return a
}

// bearer returns the request's bearer token (a node credential or an API
// token), or "".
func bearer(r *http.Request) string { return agentproto.Bearer(r.Header) }

// nodeAuth authenticates agents by their bearer credential only: the
// agent API never looks at cookies. A disabled node gets 403.
func (s *Server) nodeAuth(next http.Handler) http.Handler { return s.authNode(next, false) }

// nodeAuthAllowDisabled is nodeAuth that lets a disabled node through
// (heartbeats); a bad credential is still 401.
func (s *Server) nodeAuthAllowDisabled(next http.Handler) http.Handler { return s.authNode(next, true) }

func (s *Server) authNode(next http.Handler, allowDisabled bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.nodes.AuthNode(r.Context(), bearer(r))
		if allowDisabled && errors.Is(err, nodes.ErrForbidden) && a.NodeID != 0 {
			err = nil
		}
		if err != nil {
			if !errors.Is(err, nodes.ErrUnauthorized) && !errors.Is(err, nodes.ErrForbidden) {
				s.log.Error("authenticate agent", "err", err)
			}
			writeError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nodeAuthKey{}, a)))
	})
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	addr := web.ClientAddr(r)
	if !s.enrolLim.allow(addr) {
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too many enrolment attempts; wait a minute"})
		return
	}
	var req agentproto.EnrollRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	res, err := s.nodes.Enroll(r.Context(), nodes.EnrollRequest{Token: req.Token, Address: req.Address, Version: req.Version, RemoteAddr: addr})
	if err != nil {
		if db.Unreachable(err) {
			writeError(w, err) // 503: come back, the token is still good
			return
		}
		if !errors.Is(err, nodes.ErrUnauthorized) {
			s.log.Error("enrol node", "token", nodes.TokenID(req.Token), "err", err)
			err = nodes.ErrUnauthorized
		}
		s.log.Info("enrolment refused", "token", nodes.TokenID(req.Token), "remote", addr)
		s.nodes.AuditFailure(r.Context(), nodes.Actor{Name: "agent", Addr: addr}, "node.enroll", nodes.TokenID(req.Token), err)
		writeError(w, err)
		return
	}
	s.log.Info("node enrolled", "node", res.NodeName, "token", nodes.TokenID(req.Token), "remote", addr)
	writeJSON(w, http.StatusOK, agentproto.EnrollResponse{NodeID: res.NodeID, NodeName: res.NodeName, Kind: res.Kind,
		Credential: res.Credential, HeartbeatIntervalMS: agentproto.HeartbeatInterval.Milliseconds()})
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	var req agentproto.HeartbeatRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	resp, err := s.beat(r.Context(), nodeFrom(r.Context()), "request", req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// beat does what a heartbeat of node a asks, which came by way of via
// (the label of metrics.AgentHeartbeats: a request of its own, or a line
// of a POST stream): it records the beat and its load, records the acks
// it carries, compares its running set, and hands out a credential an
// administrator asked to rotate. An error is for the answer as a whole;
// the beat itself is recorded, and the agent sends the acks again.
func (s *Server) beat(ctx context.Context, a nodes.NodeAuth, via string, req agentproto.HeartbeatRequest) (agentproto.HeartbeatResponse, error) {
	metrics.AgentHeartbeats.WithLabelValues(via).Inc()
	s.hb.Record(a.NodeID, max(req.Load, 0), req.Version)
	resp := agentproto.HeartbeatResponse{AdminState: a.AdminState, HeartbeatIntervalMS: agentproto.HeartbeatInterval.Milliseconds()}
	if len(req.Acks) > 0 {
		// The acks of an agent that streams its deliveries. A disabled
		// node's are refused, as its ack requests are (403).
		if a.AdminState == nodes.StateDisabled {
			resp.Acks = make([]agentproto.AckResult, len(req.Acks))
			for i, x := range req.Acks {
				resp.Acks[i] = agentproto.AckResult{ID: x.ID, Status: http.StatusForbidden, Error: problem.Message(nodes.ErrForbidden)}
			}
		} else {
			acked, err := s.recordAcks(ctx, a, "heartbeat", req.Acks)
			if err != nil {
				return resp, err
			}
			resp.Acks = acked
		}
	}
	if req.Running != nil && a.AdminState != nodes.StateDisabled { // only some heartbeats carry the running set
		s.maybeReconcile(a, req.Running)
	}
	if a.RotateRequested {
		cred, err := s.nodes.RotateCredential(ctx, a)
		if err != nil {
			return resp, err
		}
		resp.Credential = cred
		s.log.Info("node credential rotated", "node", a.Name)
	}
	return resp, nil
}

// assignments answers at once when the node's assignment version is newer
// than since, else when a notification says it changed, else at wait.
//
// A POST carries in its body the acks the agent owes from its last answer
// ({"acks": [...]}, as the batch ack): they are recorded exactly as the
// batch ack records them, while the poll goes on, and their results come
// back with the answer ("acks", in input order). An agent that has just applied a delivery thus
// acks it and asks for the next one in one request instead of two.
func (s *Server) assignments(w http.ResponseWriter, r *http.Request) {
	a := nodeFrom(r.Context())
	q := r.URL.Query()
	since, err := strconv.ParseInt(q.Get(agentproto.QuerySince), 10, 64)
	if q.Get(agentproto.QuerySince) == "" {
		since, err = 0, nil
	}
	if err != nil || since < 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "since must be a non-negative integer"})
		return
	}
	wait := agentproto.DefaultPollWait
	if ws := q.Get(agentproto.QueryWait); ws != "" {
		wait, err = time.ParseDuration(ws)
		if err != nil || wait < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "wait must be a duration such as 30s"})
			return
		}
	}
	wait = min(wait, agentproto.MaxPollWait)
	delta, ok := boolParam(w, q.Get(agentproto.QueryDelta), agentproto.QueryDelta)
	if !ok {
		return
	}
	stream, ok := boolParam(w, q.Get(agentproto.QueryStream), agentproto.QueryStream)
	if !ok {
		return
	}
	if stream {
		s.streamAssignments(w, r, a, since, wait)
		return
	}
	// Carried acks are recorded while the poll goes on (an active ack
	// moves no version, so the poll need not wait for it: waiting would
	// add the ack's commit to the delivery of whatever comes next); the
	// answer waits for them and carries their results.
	var acked []agentproto.AckResult
	var ackErr error
	var acking chan struct{}
	if r.Method == http.MethodPost {
		var req agentproto.AckBatchRequest
		if err := readJSON(r, &req); err != nil {
			badJSON(w, err)
			return
		}
		if len(req.Acks) > 0 {
			acking = make(chan struct{})
			go func() {
				defer close(acking)
				acked, ackErr = s.recordAcks(r.Context(), a, "poll", req.Acks)
			}()
			defer func() { <-acking }()
		}
	}
	respond := func(ds agentproto.DesiredSet, err error) {
		if acking != nil {
			<-acking
			ds.Acks = acked
			if err == nil {
				err = ackErr
			}
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ds)
	}
	// read is the answer: what changed since the agent's version when it
	// asked for a delta, else the whole set.
	read := func() (agentproto.DesiredSet, error) {
		if delta {
			return s.nodes.DesiredSince(r.Context(), a.NodeID, since)
		}
		return s.nodes.Desired(r.Context(), a.NodeID)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	// Take the wake channel before reading, so no change slips between.
	woken := s.hub.Wait(a.NodeID)
	// A delta is small: read it at once and answer it when it is news. The
	// whole set is not: read the version first.
	var first agentproto.DesiredSet
	if delta {
		first, err = read()
	} else {
		first.Version, err = s.nodes.Version(r.Context(), a.NodeID)
	}
	if err != nil || (delta && first.Version > since) {
		respond(first, err)
		return
	}
	if first.Version <= since {
		metrics.LongPollWaiters.Inc()
		defer metrics.LongPollWaiters.Dec()
		// Nothing new yet: wait. A wake almost always means a new version,
		// so read the desired set (one statement) straight away rather
		// than the version first and the set after.
		for {
			select {
			case <-woken:
			case <-timer.C:
				respond(read())
				return
			case <-s.hub.Closing():
				// Shutting down: answer now; the agent polls another instance.
				respond(read())
				return
			case <-r.Context().Done():
				return
			}
			woken = s.hub.Wait(a.NodeID)
			ds, err := read()
			if err != nil || ds.Version > since {
				respond(ds, err)
				return
			}
		}
	}
	respond(read())
}

// boolParam reads an optional boolean query parameter ("1", "0", "true"
// ...; empty is false), answering 400 naming it when it is not one.
func boolParam(w http.ResponseWriter, v, name string) (bool, bool) {
	if v == "" {
		return false, true
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": name + " must be 1 or 0"})
		return false, false
	}
	return b, true
}

// streamAssignments is the streamed long-poll (agentproto.QueryStream):
// one DesiredSet per line, the first once the node's version is newer
// than since, then a delta at every change, until wait has passed, the
// instance shuts down or the agent goes away. A node with work arriving
// every second costs one line written per delivery instead of an answer
// and the agent's next request. An error after the first line ends the
// stream (the agent opens another from the version it has).
//
// A POST stream reads the agent's acks from its body while it streams
// (see streamAcks) and writes each line's results as a line of their own.
func (s *Server) streamAssignments(w http.ResponseWriter, r *http.Request, a nodes.NodeAuth, since int64, wait time.Duration) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	// The connection may serve the agent's next request: no deadline
	// set below outlives this one.
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	var acked <-chan agentproto.DesiredSet
	if r.Method == http.MethodPost {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			if mt, _, _ := mime.ParseMediaType(ct); mt != agentproto.StreamContentType && mt != "application/json" {
				writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "Content-Type: must be " + agentproto.StreamContentType})
				return
			}
		}
		// The body and the answer go at once (serveAckStream).
		done := make(chan struct{})
		defer close(done)
		acked = s.streamAcks(r, rc, a, wait, done)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	metrics.LongPollWaiters.Inc()
	defer metrics.LongPollWaiters.Dec()
	started := false
	// An agent that stops reading does not hold this handler (and a
	// graceful shutdown) past the write deadline. It is moved on when a
	// quarter of it has passed, not at each line (each move is a timer
	// change on the connection): a write then has between three quarters
	// of streamWriteTimeout and all of it.
	var deadline time.Time
	extend := func() {
		if now := time.Now(); deadline.Sub(now) < streamWriteTimeout*3/4 {
			deadline = now.Add(streamWriteTimeout)
			_ = rc.SetWriteDeadline(deadline)
		}
	}
	enc := json.NewEncoder(w)
	// flush sends what is written at once.
	flush := func() bool {
		extend()
		return rc.Flush() == nil
	}
	write := func(ds agentproto.DesiredSet) bool {
		return enc.Encode(ds) == nil && flush()
	}
	// Results of acks are held (written, not sent) for ackResultHold at
	// most: a delivery or a beat's answer going meanwhile takes them along
	// in its send. The agent does not wait on them (they only settle what
	// it has in flight), and a busy node's results then cost no send of
	// their own: each send is a system call on either side.
	var resultsDue <-chan time.Time
	held := time.NewTimer(ackResultHold)
	held.Stop()
	defer held.Stop()
	send := func(ds agentproto.DesiredSet) bool {
		if resultsDue != nil {
			held.Stop()
			resultsDue = nil
		}
		return write(ds)
	}
	hold := func(ds agentproto.DesiredSet) bool {
		extend()
		if enc.Encode(ds) != nil {
			return false
		}
		if resultsDue == nil {
			held.Reset(ackResultHold)
			resultsDue = held.C
		}
		return true
	}
	// mark is noted before each read of the database: until a change is
	// notified without a version, a wake may be answered from what this
	// instance placed (nodes.Service.RecentDelta).
	var mark uint64
	for read := false; ; {
		// Take the wake channel before reading, so no change slips between.
		woken := s.hub.Wait(a.NodeID)
		var ds agentproto.DesiredSet
		ok, from := false, "placed"
		if read {
			ds, ok = s.nodes.RecentDelta(a.NodeID, since, mark)
		}
		var err error
		if !ok {
			from, mark, read = "database", s.nodes.DeltaMark(a.NodeID), true
			ds, err = s.nodes.DesiredSince(ctx, a.NodeID, since)
		}
		if err != nil {
			if !started {
				writeError(w, err)
			} else if ctx.Err() == nil {
				s.log.Warn("assignment stream ended", "node", a.Name, "err", err)
			}
			return
		}
		if !started {
			w.Header().Set("Content-Type", agentproto.StreamContentType)
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
			started = true
			// The header goes at once, so the agent knows this call
			// manager streams even while nothing is new.
			if ds.Version <= since && !flush() {
				return
			}
		}
		if ds.Version > since {
			// Counted before it goes, so whoever reads the line sees it counted.
			metrics.StreamDeliveries.WithLabelValues(from).Inc()
			if !send(ds) {
				return
			}
			since = ds.Version
		}
		for woke := false; !woke; {
			select {
			case <-woken:
				woke = true
			case res, ok := <-acked:
				if !ok {
					acked = nil // the agent ended its body; deliveries go on
					continue
				}
				res.Version, res.Delta = since, true
				if res.Beat == nil && res.Error == "" {
					if !hold(res) {
						return
					}
					continue
				}
				if !send(res) || res.Error != "" {
					return // the rest of the body is not read
				}
			case <-resultsDue:
				resultsDue = nil
				if !flush() {
					return
				}
			case <-timer.C:
				endAckStream(acked, since, send)
				return
			case <-s.hub.Closing():
				// Shutting down: the agent streams from another instance.
				endAckStream(acked, since, send)
				return
			case <-ctx.Done():
				return
			}
		}
	}
}

// endAckStream ends a POST stream: it says End, writes the results of
// acks still on their way, and waits (at most streamWriteTimeout) for the
// agent to end its body, so the connection is left ready for the agent's
// next request (else serveAckStream closes it).
func endAckStream(acked <-chan agentproto.DesiredSet, since int64, write func(agentproto.DesiredSet) bool) {
	if acked == nil || !write(agentproto.DesiredSet{Version: since, Delta: true, End: true}) {
		return
	}
	limit := time.NewTimer(streamWriteTimeout)
	defer limit.Stop()
	for {
		select {
		case res, ok := <-acked:
			if !ok {
				return
			}
			res.Version, res.Delta = since, true
			if !write(res) {
				return
			}
		case <-limit.C:
			return
		}
	}
}

// streamAcks reads the acks of a POST stream, one agentproto.AckBatchRequest
// per line, records each line as the batch ack does, and sends its results
// to the stream's writer, until the body ends (the channel closes) or done
// closes. A line it cannot read ends the stream with an error line; its
// acks are sent again on the agent's next stream or heartbeat. The body
// has no overall size bound (see serveAckStream): each line has
// LargeBodyLimit, and the body as a whole the stream's wait plus time to
// end it, after which the connection is closed.
func (s *Server) streamAcks(r *http.Request, rc *http.ResponseController, a nodes.NodeAuth, wait time.Duration, done <-chan struct{}) <-chan agentproto.DesiredSet {
	_ = rc.SetReadDeadline(time.Now().Add(wait + 2*streamWriteTimeout))
	out := make(chan agentproto.DesiredSet)
	go func() {
		send := func(ds agentproto.DesiredSet) bool {
			select {
			case out <- ds:
				return true
			case <-done:
				return false
			}
		}
		lr := &io.LimitedReader{R: r.Body}
		dec := json.NewDecoder(lr)
		dec.DisallowUnknownFields()
		for line := 1; ; line++ {
			lr.N = LargeBodyLimit
			var req agentproto.StreamLine
			if err := dec.Decode(&req); err != nil {
				if errors.Is(err, io.EOF) && lr.N > 0 {
					close(out) // the agent ended its body
					return
				}
				// out stays open: the body did not end (the connection
				// closes with the answer).
				if tooLong := lr.N == 0; r.Context().Err() == nil && (tooLong || !isNetError(err)) {
					msg := fmt.Sprintf("acks: line %d: %s", line, ackLineError(err, tooLong))
					s.log.Warn("assignment stream: unreadable acks", "node", a.Name, "err", msg)
					send(agentproto.DesiredSet{Error: msg})
				}
				return
			}
			if req.Beat != nil {
				ds, ok := s.streamBeat(r, a, line, *req.Beat)
				if !send(ds) || !ok {
					return
				}
			}
			if len(req.Acks) == 0 {
				continue // an empty line keeps nothing waiting
			}
			res, err := s.recordAcks(r.Context(), a, "stream", req.Acks)
			if err != nil {
				res = refusedAcks(req.Acks, err)
			}
			if !send(agentproto.DesiredSet{Acks: res}) {
				return
			}
		}
	}()
	return out
}

// refusedAcks gives each of acks the error that refused them all.
func refusedAcks(acks []agentproto.Ack, err error) []agentproto.AckResult {
	res := make([]agentproto.AckResult, len(acks))
	for i, x := range acks {
		res[i] = agentproto.AckResult{ID: x.ID, Status: problem.HTTPStatus(err), Error: problem.Message(err)}
	}
	return res
}

// streamBeat answers a heartbeat that came on line of a POST stream's
// body, as POST /heartbeat would: the credential is checked again (the
// stream may outlive its revocation; a disabled node still beats), the
// beat recorded and its answer returned as a line. A credential no longer
// good, or no way to check it, ends the stream with an error line (false):
// the agent then beats in requests of their own, which say why.
func (s *Server) streamBeat(r *http.Request, opened nodes.NodeAuth, line int, req agentproto.HeartbeatRequest) (agentproto.DesiredSet, bool) {
	a, err := s.nodes.AuthNode(r.Context(), bearer(r))
	if errors.Is(err, nodes.ErrForbidden) && a.NodeID == opened.NodeID {
		err = nil
	}
	if err != nil {
		msg := fmt.Sprintf("beat: line %d: %s", line, problem.Message(err))
		s.log.Warn("assignment stream: beat refused", "node", opened.Name, "err", msg)
		return agentproto.DesiredSet{Error: msg}, false
	}
	resp, err := s.beat(r.Context(), a, "stream", req)
	if err != nil {
		// The beat is recorded; its acks are refused (recordAcks logged
		// why), or the rotated credential goes with a later beat.
		if len(req.Acks) > 0 && resp.Acks == nil {
			resp.Acks = refusedAcks(req.Acks, err)
		} else {
			s.log.Warn("assignment stream: rotate credential", "node", a.Name, "err", err)
		}
	}
	return agentproto.DesiredSet{Beat: &resp}, true
}

// ackLineError says what was wrong with a line of acks.
func ackLineError(err error, tooLong bool) string {
	if tooLong {
		return fmt.Sprintf("longer than %d bytes", LargeBodyLimit)
	}
	return "invalid JSON: " + err.Error()
}

// isNetError reports a body read that failed on the connection (the
// agent went away, or the read deadline passed) rather than on its content.
func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF)
}

// streamWriteTimeout bounds writing one line of a stream.
const streamWriteTimeout = 10 * time.Second

// ackResultHold is the longest the results of a stream's acks wait for
// a delivery or a beat's answer to go with (see streamAssignments): as
// long as a busy agent holds its acks for a beat.
const ackResultHold = agentproto.AckHold

func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	a := nodeFrom(r.Context())
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such assignment"})
		return
	}
	var req agentproto.AckRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	metrics.AgentAcks.WithLabelValues("single").Inc()
	if err := s.nodes.Ack(r.Context(), a.NodeID, agentproto.Ack{ID: id, Epoch: req.Epoch, State: req.State, Error: req.Error}); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, agentproto.OK{OK: true})
}

// ackBatch records many acks of the calling node in one request:
// {"acks": [{id, epoch, state}, ...]} → {"results": [...]} in input order,
// 200 even when some acks were refused.
func (s *Server) ackBatch(w http.ResponseWriter, r *http.Request) {
	a := nodeFrom(r.Context())
	var req agentproto.AckBatchRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	results, err := s.recordAcks(r.Context(), a, "batch", req.Acks)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, agentproto.AckBatchResponse{Results: results})
}

// recordAcks records acks of the calling node, which came by way of via
// (the label of metrics.AgentAcks), in one statement and
// returns one result per ack in input order: ok, or the error and the
// status the single ack would have answered. The error is for the batch
// as a whole (bad size, database failure).
func (s *Server) recordAcks(ctx context.Context, a nodes.NodeAuth, via string, acks []agentproto.Ack) ([]agentproto.AckResult, error) {
	metrics.AgentAcks.WithLabelValues(via).Add(float64(len(acks)))
	res, err := s.nodes.AckBatch(ctx, a.NodeID, acks)
	if err != nil {
		if problem.HTTPStatus(err) == http.StatusInternalServerError && ctx.Err() == nil {
			s.log.Error("ack batch", "node", a.Name, "acks", len(acks), "err", err)
		}
		return nil, err
	}
	out := make([]agentproto.AckResult, len(res))
	for i, x := range res {
		out[i] = agentproto.AckResult{ID: x.ID, OK: x.Err == nil}
		if x.Err != nil {
			out[i].Status, out[i].Error = problem.HTTPStatus(x.Err), problem.Message(x.Err)
		}
	}
	return out, nil
}
