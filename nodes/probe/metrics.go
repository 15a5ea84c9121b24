package probe

import "github.com/callplane/callplane/server/metrics"

// observe records a probe's latency and outcome by node kind.
func observe(kind string, res Result) {
	switch kind {
	case KindMedia, KindIVR, KindQueue, KindMeeting, KindIM:
	default:
		kind = "other"
	}
	result := "ok"
	if !res.OK {
		result = "fail"
		metrics.ProbeFailures.WithLabelValues(kind).Inc()
	}
	metrics.ProbeDuration.WithLabelValues(kind, result).Observe(res.Latency.Seconds())
}

// init makes every kind's series exist from the start, at zero, so a
// rate over them works before the first failure.
func init() {
	for _, k := range []string{KindMedia, KindIVR, KindQueue, KindMeeting, KindIM} {
		metrics.ProbeFailures.WithLabelValues(k)
		metrics.ProbeDuration.WithLabelValues(k, "ok")
		metrics.ProbeDuration.WithLabelValues(k, "fail")
	}
}
