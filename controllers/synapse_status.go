package controllers

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/synapse"
)

// synapseSetupProblem is why the operator could not start a watcher from a
// SynapseReplication (a missing Secret, a bad homeserver config): a status
// reason and a message that says what to fix.
type synapseSetupProblem struct {
	reason  string
	message string
}

func (p *synapseSetupProblem) Error() string { return p.reason + ": " + p.message }

// synapseObservation is everything SynapseStatus reads besides the resource.
type synapseObservation struct {
	// problem, when set, is why no watcher runs.
	problem *synapseSetupProblem
	// snap is the watcher's snapshot; haveSnap is false when no watcher
	// runs.
	snap     synapse.Snapshot
	haveSnap bool
	// recentGaps are the writers whose gap count grew within the gap
	// window (gapTracker).
	recentGaps []synapse.WriterRef
	// now stamps condition transitions.
	now time.Time
}

// maxNamesInMessage bounds how many writers a condition message names.
const maxNamesInMessage = 5

// SynapseStatus computes a SynapseReplication's status from what the
// watcher saw. It is a pure function of its inputs; conditions keep their
// transition times from sr.Status when their status does not change.
func SynapseStatus(sr *replv1.SynapseReplication, obs synapseObservation) replv1.SynapseReplicationStatus {
	st := replv1.SynapseReplicationStatus{
		ObservedGeneration: sr.Generation,
		Conditions:         append([]metav1.Condition(nil), sr.Status.Conditions...),
	}
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		if len(msg) > 1000 {
			msg = msg[:1000]
		}
		c := metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: sr.Generation}
		if old := meta.FindStatusCondition(st.Conditions, typ); old == nil || old.Status != status {
			c.LastTransitionTime = metav1.NewTime(obs.now.Truncate(time.Second))
		}
		meta.SetStatusCondition(&st.Conditions, c)
	}

	if obs.problem != nil {
		set(replv1.ConditionReady, metav1.ConditionFalse, obs.problem.reason, obs.problem.message)
		set(replv1.ConditionWritersHealthy, metav1.ConditionUnknown, replv1.ReasonWritersUnknown, "no watcher runs: "+obs.problem.message)
		set(replv1.ConditionDegraded, metav1.ConditionFalse, replv1.ReasonAsExpected, "")
		return st
	}
	if !obs.haveSnap {
		set(replv1.ConditionReady, metav1.ConditionFalse, replv1.ReasonWatcherPending, "the watcher has not started yet")
		set(replv1.ConditionWritersHealthy, metav1.ConditionUnknown, replv1.ReasonWritersUnknown, "the watcher has not started yet")
		set(replv1.ConditionDegraded, metav1.ConditionFalse, replv1.ReasonAsExpected, "")
		return st
	}
	snap := obs.snap
	fillSynapseLists(&st, snap)

	reason, msg := synapseReadiness(sr, snap)
	if reason == replv1.ReasonSubscribed {
		set(replv1.ConditionReady, metav1.ConditionTrue, reason, msg)
	} else {
		set(replv1.ConditionReady, metav1.ConditionFalse, reason, msg)
	}

	wStatus, wReason, wMsg := synapseWritersHealth(snap, obs.recentGaps)
	set(replv1.ConditionWritersHealthy, wStatus, wReason, wMsg)

	if client, limit, high := outputBufferHigh(snap.Redis); high {
		set(replv1.ConditionDegraded, metav1.ConditionTrue, replv1.ReasonOutputBufferHigh,
			fmt.Sprintf("Redis pub/sub client %s has %d bytes in its output buffer, more than half the %d-byte limit; Redis disconnects it at the limit (client-output-buffer-limit pubsub)", client, st.Redis.MaxOutputBufferBytes, limit))
	} else {
		msg := ""
		if snap.Redis.Unavailable != "" {
			msg = "output buffers not checked: " + snap.Redis.Unavailable
		}
		set(replv1.ConditionDegraded, metav1.ConditionFalse, replv1.ReasonAsExpected, msg)
	}
	return st
}

// synapseReadiness is the Ready reason and message.
func synapseReadiness(sr *replv1.SynapseReplication, snap synapse.Snapshot) (string, string) {
	errText := snap.ErrorMessage
	if snap.Error != nil {
		errText = snap.Error.Error()
	}
	if snap.Subscribed {
		return replv1.ReasonSubscribed, fmt.Sprintf("subscribed to channel %q on Redis %s; %d processes answered the last REPLICATE",
			sr.Spec.ServerName, sr.Spec.Redis.Address, len(snap.Responders))
	}
	switch {
	case errors.Is(snap.Error, synapse.ErrRedisAuth):
		return replv1.ReasonRedisAuthFailed, errText + ": check spec.redis.passwordSecretRef (and username) against the Redis password Synapse uses"
	case errors.Is(snap.Error, synapse.ErrRedisUnreachable):
		return replv1.ReasonRedisUnreachable, errText + ": check spec.redis.address and that the operator may reach it (NetworkPolicy); the watcher retries"
	case errText != "":
		return replv1.ReasonRedisError, errText
	}
	return replv1.ReasonWatcherPending, "connecting to Redis " + sr.Spec.Redis.Address
}

// synapseWritersHealth is the WritersHealthy condition: missing writers
// first (they stall /sync), then unexpected ones, then gaps.
func synapseWritersHealth(snap synapse.Snapshot, recentGaps []synapse.WriterRef) (metav1.ConditionStatus, string, string) {
	if !snap.Subscribed {
		return metav1.ConditionUnknown, replv1.ReasonWritersUnknown, "not subscribed to the channel"
	}
	var problems []string
	reason := ""
	if n := len(snap.MissingWriters); n > 0 {
		reason = replv1.ReasonMissingWriter
		problems = append(problems, fmt.Sprintf("%d configured writer(s) never announced their stream after REPLICATE: %s", n, writerList(snap.MissingWriters)))
	}
	if n := len(snap.UnexpectedWriters); n > 0 {
		if reason == "" {
			reason = replv1.ReasonUnexpectedWriter
		}
		problems = append(problems, fmt.Sprintf("%d instance(s) write a stream stream_writers does not give them: %s", n, writerList(snap.UnexpectedWriters)))
	}
	if n := len(recentGaps); n > 0 {
		if reason == "" {
			reason = replv1.ReasonGaps
		}
		problems = append(problems, fmt.Sprintf("%d writer(s) showed a gap (a POSITION ahead of the rows seen) in the last %s: %s", n, gapWindow, writerList(recentGaps)))
	}
	if reason != "" {
		return metav1.ConditionFalse, reason, strings.Join(problems, "; ")
	}
	if countAnnounced(snap) == 0 {
		msg := "no writer has announced a stream yet"
		if errors.Is(snap.Error, synapse.ErrNothingHeard) {
			msg = snap.Error.Error() + ": check spec.serverName (it is the channel) and that Synapse runs with workers"
		}
		return metav1.ConditionUnknown, replv1.ReasonWritersUnknown, msg
	}
	return metav1.ConditionTrue, replv1.ReasonAllWritersAnnounced, fmt.Sprintf("%d writers on %d streams announced", countAnnounced(snap), len(snap.Streams))
}

func writerList(refs []synapse.WriterRef) string {
	var names []string
	for i, r := range refs {
		if i == maxNamesInMessage {
			names = append(names, fmt.Sprintf("and %d more", len(refs)-i))
			break
		}
		names = append(names, r.Stream+"/"+r.Instance)
	}
	return strings.Join(names, ", ")
}

func countAnnounced(snap synapse.Snapshot) int {
	n := 0
	for _, s := range snap.Streams {
		for _, w := range s.Writers {
			if w.Announced {
				n++
			}
		}
	}
	return n
}

// outputBufferLimit is the pub/sub output buffer size at which Redis drops
// a client: the hard limit, or the soft limit when it is lower (Redis drops
// at the soft limit after softSeconds). Zero means no limit.
func outputBufferLimit(r synapse.RedisStats) int64 {
	limit := r.OutputBufferHardLimitBytes
	if s := r.OutputBufferSoftLimitBytes; s > 0 && (limit == 0 || s < limit) {
		limit = s
	}
	return limit
}

// outputBufferHigh reports the client with the largest output buffer when
// it is above half the limit.
func outputBufferHigh(r synapse.RedisStats) (string, int64, bool) {
	limit := outputBufferLimit(r)
	c, ok := largestClient(r)
	if limit <= 0 || !ok || c.OutputBufferBytes*2 <= limit {
		return "", limit, false
	}
	return clientLabel(c), limit, true
}

func largestClient(r synapse.RedisStats) (synapse.PubSubClient, bool) {
	var best synapse.PubSubClient
	found := false
	for _, c := range r.Clients {
		if !found || c.OutputBufferBytes > best.OutputBufferBytes {
			best, found = c, true
		}
	}
	return best, found
}

func clientLabel(c synapse.PubSubClient) string {
	if c.Name != "" {
		return c.Addr + " (" + c.Name + ")"
	}
	return c.Addr
}

// fillSynapseLists copies the snapshot's streams, writers and Redis figures
// into st, bounded.
func fillSynapseLists(st *replv1.SynapseReplicationStatus, snap synapse.Snapshot) {
	st.StreamCount = int32(len(snap.Streams))
	st.MissingWriterCount = int32(len(snap.MissingWriters))
	for _, s := range snap.Streams {
		for _, w := range s.Writers {
			if w.Announced {
				st.WriterCount++
			}
		}
	}
	st.MissingWriters = writerRefs(snap.MissingWriters)
	st.UnexpectedWriters = writerRefs(snap.UnexpectedWriters)
	streams := snap.Streams
	if len(streams) > replv1.MaxStatusStreams {
		st.OmittedStreams = int32(len(streams) - replv1.MaxStatusStreams)
		streams = streams[:replv1.MaxStatusStreams]
	}
	for _, s := range streams {
		ss := replv1.SynapseStreamStatus{Name: s.Name, Spread: s.Spread}
		writers := s.Writers
		if len(writers) > replv1.MaxStatusWritersPerStream {
			ss.OmittedWriters = int32(len(writers) - replv1.MaxStatusWritersPerStream)
			writers = writers[:replv1.MaxStatusWritersPerStream]
		}
		for _, w := range writers {
			ss.Writers = append(ss.Writers, replv1.SynapseWriterStatus{
				Instance:        w.Instance,
				Announced:       w.Announced,
				Configured:      w.Configured,
				Position:        w.Position,
				LastAdvanceTime: timeOrNil(w.LastAdvanceAt),
				Gaps:            int64(w.Gaps),
				Resets:          int64(w.Resets),
			})
		}
		st.Streams = append(st.Streams, ss)
	}
	st.Responders = append([]string(nil), snap.Responders...)
	if len(st.Responders) > replv1.MaxStatusResponders {
		st.Responders = st.Responders[:replv1.MaxStatusResponders]
	}
	r := snap.Redis
	rs := &replv1.SynapseRedisStatus{
		Subscribers:            r.Subscribers,
		OutputBufferLimitBytes: outputBufferLimit(r),
		Unavailable:            r.Unavailable,
	}
	if c, ok := largestClient(r); ok {
		rs.MaxOutputBufferBytes = c.OutputBufferBytes
		rs.MaxOutputBufferClient = clientLabel(c)
	}
	if *rs != (replv1.SynapseRedisStatus{}) {
		st.Redis = rs
	}
	st.LastMessageTime = timeOrNil(snap.LastMessageAt)
	st.LastSolicitTime = timeOrNil(snap.LastSolicitAt)
}

func writerRefs(refs []synapse.WriterRef) []replv1.SynapseWriterRef {
	if len(refs) > replv1.MaxStatusWriterRefs {
		refs = refs[:replv1.MaxStatusWriterRefs]
	}
	var out []replv1.SynapseWriterRef
	for _, r := range refs {
		out = append(out, replv1.SynapseWriterRef{Stream: r.Stream, Instance: r.Instance})
	}
	return out
}

// timeOrNil is t at the API's one-second resolution, nil when zero, so that
// a status read back from the API server compares equal to a fresh one.
func timeOrNil(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t.Truncate(time.Second))
	return &mt
}

// synapseStatusSignificant reports whether two statuses differ in more than
// the measurements that move all the time (positions, last advances,
// spreads, Redis buffer sizes, message and solicit times). Significant
// changes are written at once; the rest at most once per status interval.
func synapseStatusSignificant(a, b replv1.SynapseReplicationStatus) bool {
	strip := func(s replv1.SynapseReplicationStatus) replv1.SynapseReplicationStatus {
		s.LastMessageTime, s.LastSolicitTime = nil, nil
		if s.Redis != nil {
			r := *s.Redis
			r.MaxOutputBufferBytes, r.MaxOutputBufferClient, r.Subscribers = 0, "", 0
			s.Redis = &r
		}
		streams := make([]replv1.SynapseStreamStatus, len(s.Streams))
		for i, st := range s.Streams {
			st.Spread = 0
			ws := make([]replv1.SynapseWriterStatus, len(st.Writers))
			for j, w := range st.Writers {
				w.Position, w.LastAdvanceTime = 0, nil
				ws[j] = w
			}
			st.Writers = ws
			streams[i] = st
		}
		s.Streams = streams
		return s
	}
	return !equality.Semantic.DeepEqual(strip(a), strip(b))
}

// gapWindow is how long a writer's gap keeps WritersHealthy False: gaps are
// counted since the watcher started, but only a recent one needs a person.
const gapWindow = 10 * time.Minute

// gapTracker remembers, per writer, the gap count last seen and when it last
// grew.
type gapTracker map[synapse.WriterRef]gapSeen

type gapSeen struct {
	count  uint64
	grewAt time.Time
}

// update records snap's gap counts at now and returns the tracker to keep
// and the writers whose gaps grew within gapWindow, sorted. A tracker
// starts empty, so gaps already counted when it first sees a writer count
// as new: the watcher itself is that recent.
func (g gapTracker) update(snap synapse.Snapshot, now time.Time) (gapTracker, []synapse.WriterRef) {
	next := gapTracker{}
	var recent []synapse.WriterRef
	for _, s := range snap.Streams {
		for _, w := range s.Writers {
			ref := synapse.WriterRef{Stream: s.Name, Instance: w.Instance}
			seen := g[ref]
			if w.Gaps > seen.count {
				seen.grewAt = now
			}
			seen.count = w.Gaps
			if w.Gaps > 0 {
				next[ref] = seen
			}
			if w.Gaps > 0 && now.Sub(seen.grewAt) < gapWindow {
				recent = append(recent, ref)
			}
		}
	}
	sort.Slice(recent, func(i, j int) bool {
		if recent[i].Stream != recent[j].Stream {
			return recent[i].Stream < recent[j].Stream
		}
		return recent[i].Instance < recent[j].Instance
	})
	return next, recent
}
