package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/synapse"
)

var statusNow = time.Date(2026, 7, 24, 12, 0, 0, 0, time.UTC)

func testSynapseReplication() *replv1.SynapseReplication {
	sr := &replv1.SynapseReplication{
		Spec: replv1.SynapseReplicationSpec{
			ServerName: "example.com",
			Redis:      replv1.SynapseRedisSpec{Address: "redis:6379"},
		},
	}
	sr.Name, sr.Namespace, sr.Generation = "matrix", "ns", 3
	return sr
}

// healthySnapshot is a deployment with two event writers and a typing
// writer, all announced.
func healthySnapshot() synapse.Snapshot {
	return synapse.Snapshot{
		MeasuredAt: statusNow, ServerName: "example.com", Subscribed: true,
		LastMessageAt: statusNow.Add(-time.Second), LastSolicitAt: statusNow.Add(-30 * time.Second),
		Streams: []synapse.Stream{
			{Name: "events", MinPosition: 90, MaxPosition: 100, Spread: 10, Writers: []synapse.Writer{
				{Instance: "event_persister1", Announced: true, Configured: true, Position: 100, LastAdvanceAt: statusNow.Add(-1500 * time.Millisecond)},
				{Instance: "event_persister2", Announced: true, Configured: true, Position: 90, LastAdvanceAt: statusNow.Add(-2 * time.Second)},
			}},
			{Name: "typing", MinPosition: 7, MaxPosition: 7, Writers: []synapse.Writer{
				{Instance: "master", Announced: true, Configured: true, Position: 7},
			}},
		},
		Responders: []string{"event_persister1", "event_persister2", "master"},
		Redis: synapse.RedisStats{
			Subscribers: 4, OutputBufferHardLimitBytes: 32 << 20, OutputBufferSoftLimitBytes: 8 << 20, OutputBufferSoftSeconds: 60,
			Clients: []synapse.PubSubClient{{ID: 1, Addr: "10.0.0.5:4000", OutputBufferBytes: 1000, Subscriptions: 1}},
		},
	}
}

func TestSynapseStatus(t *testing.T) {
	type want struct {
		ready, writers, degraded string // "Status/Reason"
		inMessage                string // a substring of some condition message
		streams, writerCount     int32
		missing                  int32
	}
	tests := map[string]struct {
		obs  synapseObservation
		want want
	}{
		"no watcher yet": {
			obs:  synapseObservation{},
			want: want{ready: "False/WatcherPending", writers: "Unknown/WritersUnknown", degraded: "False/AsExpected"},
		},
		"missing secret": {
			obs: synapseObservation{problem: &synapseSetupProblem{reason: replv1.ReasonSecretNotFound, message: "spec.redis.passwordSecretRef: Secret ns/redis does not exist"}},
			want: want{ready: "False/SecretNotFound", writers: "Unknown/WritersUnknown", degraded: "False/AsExpected",
				inMessage: "Secret ns/redis does not exist"},
		},
		"healthy": {
			obs:  synapseObservation{haveSnap: true, snap: healthySnapshot()},
			want: want{ready: "True/Subscribed", writers: "True/AllWritersAnnounced", degraded: "False/AsExpected", streams: 2, writerCount: 3, inMessage: "3 processes answered"},
		},
		"redis unreachable": {
			obs: synapseObservation{haveSnap: true, snap: synapse.Snapshot{Error: fmt.Errorf("dial redis:6379: %w", synapse.ErrRedisUnreachable)}},
			want: want{ready: "False/RedisUnreachable", writers: "Unknown/WritersUnknown", degraded: "False/AsExpected",
				inMessage: "check spec.redis.address"},
		},
		"auth refused": {
			obs: synapseObservation{haveSnap: true, snap: synapse.Snapshot{Error: fmt.Errorf("AUTH: WRONGPASS: %w", synapse.ErrRedisAuth)}},
			want: want{ready: "False/RedisAuthFailed", writers: "Unknown/WritersUnknown", degraded: "False/AsExpected",
				inMessage: "passwordSecretRef"},
		},
		"other redis error": {
			obs:  synapseObservation{haveSnap: true, snap: synapse.Snapshot{ErrorMessage: "NOPERM this user has no permissions to run the 'subscribe' command"}},
			want: want{ready: "False/RedisError", writers: "Unknown/WritersUnknown", degraded: "False/AsExpected", inMessage: "NOPERM"},
		},
		"nothing heard": {
			obs:  synapseObservation{haveSnap: true, snap: synapse.Snapshot{Subscribed: true, Error: synapse.ErrNothingHeard}},
			want: want{ready: "True/Subscribed", writers: "Unknown/WritersUnknown", degraded: "False/AsExpected", inMessage: "check spec.serverName"},
		},
		"configured writers, none announced yet": {
			obs: synapseObservation{haveSnap: true, snap: synapse.Snapshot{Subscribed: true, Streams: []synapse.Stream{
				{Name: "events", Writers: []synapse.Writer{{Instance: "event_persister1", Configured: true}}},
			}}},
			want: want{ready: "True/Subscribed", writers: "Unknown/WritersUnknown", degraded: "False/AsExpected", inMessage: "no writer has announced", streams: 1},
		},
		"missing writer": {
			obs: synapseObservation{haveSnap: true, snap: func() synapse.Snapshot {
				s := healthySnapshot()
				s.Streams = append(s.Streams, synapse.Stream{Name: "quarantined_media", Writers: []synapse.Writer{{Instance: "media1", Configured: true}}})
				s.MissingWriters = []synapse.WriterRef{{Stream: "quarantined_media", Instance: "media1"}}
				return s
			}()},
			want: want{ready: "True/Subscribed", writers: "False/MissingWriter", degraded: "False/AsExpected",
				inMessage: "quarantined_media/media1", streams: 3, writerCount: 3, missing: 1},
		},
		"unexpected writer": {
			obs: synapseObservation{haveSnap: true, snap: func() synapse.Snapshot {
				s := healthySnapshot()
				s.UnexpectedWriters = []synapse.WriterRef{{Stream: "typing", Instance: "rogue"}}
				return s
			}()},
			want: want{ready: "True/Subscribed", writers: "False/UnexpectedWriter", degraded: "False/AsExpected", inMessage: "typing/rogue", streams: 2, writerCount: 3},
		},
		"missing wins over unexpected and gaps": {
			obs: synapseObservation{haveSnap: true, recentGaps: []synapse.WriterRef{{Stream: "events", Instance: "event_persister2"}}, snap: func() synapse.Snapshot {
				s := healthySnapshot()
				s.MissingWriters = []synapse.WriterRef{{Stream: "events", Instance: "event_persister3"}}
				s.UnexpectedWriters = []synapse.WriterRef{{Stream: "typing", Instance: "rogue"}}
				return s
			}()},
			want: want{ready: "True/Subscribed", writers: "False/MissingWriter", degraded: "False/AsExpected", inMessage: "events/event_persister2", streams: 2, writerCount: 3, missing: 1},
		},
		"recent gap": {
			obs:  synapseObservation{haveSnap: true, snap: healthySnapshot(), recentGaps: []synapse.WriterRef{{Stream: "events", Instance: "event_persister2"}}},
			want: want{ready: "True/Subscribed", writers: "False/Gaps", degraded: "False/AsExpected", inMessage: "events/event_persister2", streams: 2, writerCount: 3},
		},
		"output buffer above half the soft limit": {
			obs: synapseObservation{haveSnap: true, snap: func() synapse.Snapshot {
				s := healthySnapshot()
				s.Redis.Clients = append([]synapse.PubSubClient{{ID: 9, Name: "slow", Addr: "10.0.0.9:5000", OutputBufferBytes: 5 << 20}}, s.Redis.Clients...)
				return s
			}()},
			want: want{ready: "True/Subscribed", writers: "True/AllWritersAnnounced", degraded: "True/OutputBufferHigh", inMessage: "10.0.0.9:5000 (slow)", streams: 2, writerCount: 3},
		},
		"output buffer just at half": {
			obs: synapseObservation{haveSnap: true, snap: func() synapse.Snapshot {
				s := healthySnapshot()
				s.Redis.Clients[0].OutputBufferBytes = 4 << 20
				return s
			}()},
			want: want{ready: "True/Subscribed", writers: "True/AllWritersAnnounced", degraded: "False/AsExpected", streams: 2, writerCount: 3},
		},
		"no output buffer limit": {
			obs: synapseObservation{haveSnap: true, snap: func() synapse.Snapshot {
				s := healthySnapshot()
				s.Redis.OutputBufferHardLimitBytes, s.Redis.OutputBufferSoftLimitBytes = 0, 0
				s.Redis.Clients[0].OutputBufferBytes = 1 << 30
				return s
			}()},
			want: want{ready: "True/Subscribed", writers: "True/AllWritersAnnounced", degraded: "False/AsExpected", streams: 2, writerCount: 3},
		},
		"redis stats forbidden by ACL": {
			obs: synapseObservation{haveSnap: true, snap: func() synapse.Snapshot {
				s := healthySnapshot()
				s.Redis = synapse.RedisStats{Subscribers: 4, Unavailable: "CLIENT LIST: NOPERM"}
				return s
			}()},
			want: want{ready: "True/Subscribed", writers: "True/AllWritersAnnounced", degraded: "False/AsExpected", inMessage: "output buffers not checked: CLIENT LIST: NOPERM", streams: 2, writerCount: 3},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.obs.now = statusNow
			sr := testSynapseReplication()
			st := SynapseStatus(sr, tc.obs)
			if st.ObservedGeneration != 3 {
				t.Errorf("observedGeneration = %d, want 3", st.ObservedGeneration)
			}
			var msgs []string
			for typ, w := range map[string]string{
				replv1.ConditionReady: tc.want.ready, replv1.ConditionWritersHealthy: tc.want.writers, replv1.ConditionDegraded: tc.want.degraded,
			} {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil {
					t.Errorf("no %s condition", typ)
					continue
				}
				msgs = append(msgs, c.Message)
				if got := string(c.Status) + "/" + c.Reason; got != w {
					t.Errorf("%s = %s (%s), want %s", typ, got, c.Message, w)
				}
				if !c.LastTransitionTime.Time.Equal(statusNow) {
					t.Errorf("%s lastTransitionTime = %v, want %v", typ, c.LastTransitionTime, statusNow)
				}
			}
			if tc.want.inMessage != "" && !strings.Contains(strings.Join(msgs, "\n"), tc.want.inMessage) {
				t.Errorf("no condition message mentions %q: %q", tc.want.inMessage, msgs)
			}
			if st.StreamCount != tc.want.streams || st.WriterCount != tc.want.writerCount || st.MissingWriterCount != tc.want.missing {
				t.Errorf("streams/writers/missing = %d/%d/%d, want %d/%d/%d", st.StreamCount, st.WriterCount, st.MissingWriterCount,
					tc.want.streams, tc.want.writerCount, tc.want.missing)
			}
			if int(st.MissingWriterCount) != len(st.MissingWriters) {
				t.Errorf("missingWriterCount %d but %d missingWriters listed", st.MissingWriterCount, len(st.MissingWriters))
			}
		})
	}
}

func TestSynapseStatusFields(t *testing.T) {
	snap := healthySnapshot()
	snap.Streams[0].Writers[1].Gaps, snap.Streams[0].Writers[1].Resets = 2, 1
	st := SynapseStatus(testSynapseReplication(), synapseObservation{haveSnap: true, snap: snap, now: statusNow})
	if len(st.Streams) != 2 || st.Streams[0].Name != "events" || st.Streams[0].Spread != 10 {
		t.Fatalf("streams = %+v", st.Streams)
	}
	w := st.Streams[0].Writers[1]
	if w.Instance != "event_persister2" || !w.Announced || !w.Configured || w.Position != 90 || w.Gaps != 2 || w.Resets != 1 {
		t.Errorf("writer = %+v", w)
	}
	// Times are at the API's one-second resolution, so that a status read
	// back compares equal.
	if w.LastAdvanceTime == nil || !w.LastAdvanceTime.Time.Equal(statusNow.Add(-2*time.Second)) {
		t.Errorf("lastAdvanceTime = %v, want %v", w.LastAdvanceTime, statusNow.Add(-2*time.Second))
	}
	if got := st.Streams[0].Writers[0].LastAdvanceTime; got == nil || !got.Time.Equal(statusNow.Add(-2*time.Second)) {
		t.Errorf("lastAdvanceTime %v not truncated to the second", got)
	}
	if st.Streams[1].Writers[0].LastAdvanceTime != nil {
		t.Errorf("a writer that never advanced has lastAdvanceTime %v", st.Streams[1].Writers[0].LastAdvanceTime)
	}
	if strings.Join(st.Responders, ",") != "event_persister1,event_persister2,master" {
		t.Errorf("responders = %v", st.Responders)
	}
	r := st.Redis
	if r == nil || r.Subscribers != 4 || r.OutputBufferLimitBytes != 8<<20 || r.MaxOutputBufferBytes != 1000 || r.MaxOutputBufferClient != "10.0.0.5:4000" {
		t.Errorf("redis = %+v", r)
	}
	if st.LastSolicitTime == nil || !st.LastSolicitTime.Time.Equal(statusNow.Add(-30*time.Second)) {
		t.Errorf("lastSolicitTime = %v", st.LastSolicitTime)
	}
}

func TestSynapseStatusBounded(t *testing.T) {
	snap := healthySnapshot()
	snap.Streams = nil
	for i := range replv1.MaxStatusStreams + 3 {
		s := synapse.Stream{Name: fmt.Sprintf("s%03d", i)}
		for j := range replv1.MaxStatusWritersPerStream + 5 {
			s.Writers = append(s.Writers, synapse.Writer{Instance: fmt.Sprintf("w%03d", j), Announced: true, Position: int64(j)})
		}
		snap.Streams = append(snap.Streams, s)
	}
	for i := range replv1.MaxStatusWriterRefs + 1 {
		snap.MissingWriters = append(snap.MissingWriters, synapse.WriterRef{Stream: "s000", Instance: fmt.Sprintf("m%03d", i)})
	}
	for i := range replv1.MaxStatusResponders + 1 {
		snap.Responders = append(snap.Responders, fmt.Sprintf("p%03d", i))
	}
	st := SynapseStatus(testSynapseReplication(), synapseObservation{haveSnap: true, snap: snap, now: statusNow})
	if len(st.Streams) != replv1.MaxStatusStreams || st.OmittedStreams != 3 {
		t.Errorf("%d streams listed, %d omitted; want %d and 3", len(st.Streams), st.OmittedStreams, replv1.MaxStatusStreams)
	}
	if len(st.Streams[0].Writers) != replv1.MaxStatusWritersPerStream || st.Streams[0].OmittedWriters != 5 {
		t.Errorf("%d writers listed, %d omitted", len(st.Streams[0].Writers), st.Streams[0].OmittedWriters)
	}
	// Counts are of everything, not of what fits.
	if st.StreamCount != int32(replv1.MaxStatusStreams+3) || st.MissingWriterCount != int32(replv1.MaxStatusWriterRefs+1) {
		t.Errorf("streamCount %d, missingWriterCount %d", st.StreamCount, st.MissingWriterCount)
	}
	if len(st.MissingWriters) != replv1.MaxStatusWriterRefs || len(st.Responders) != replv1.MaxStatusResponders {
		t.Errorf("%d missing writers and %d responders listed", len(st.MissingWriters), len(st.Responders))
	}
	c := meta.FindStatusCondition(st.Conditions, replv1.ConditionWritersHealthy)
	if c == nil || !strings.Contains(c.Message, "and 28 more") || len(c.Message) > 1000 {
		t.Errorf("WritersHealthy message names too many or too few: %v", c)
	}
}

func TestSynapseStatusKeepsTransitionTimes(t *testing.T) {
	sr := testSynapseReplication()
	earlier := statusNow.Add(-time.Hour)
	first := SynapseStatus(sr, synapseObservation{haveSnap: true, snap: healthySnapshot(), now: earlier})
	sr.Status = first
	snap := healthySnapshot()
	snap.MissingWriters = []synapse.WriterRef{{Stream: "events", Instance: "event_persister3"}}
	second := SynapseStatus(sr, synapseObservation{haveSnap: true, snap: snap, now: statusNow})
	for typ, want := range map[string]time.Time{
		replv1.ConditionReady: earlier, replv1.ConditionDegraded: earlier, replv1.ConditionWritersHealthy: statusNow,
	} {
		c := meta.FindStatusCondition(second.Conditions, typ)
		if c == nil || !c.LastTransitionTime.Time.Equal(want) {
			t.Errorf("%s lastTransitionTime = %v, want %v", typ, c, want)
		}
	}
}

func TestSynapseStatusSignificant(t *testing.T) {
	base := SynapseStatus(testSynapseReplication(), synapseObservation{haveSnap: true, snap: healthySnapshot(), now: statusNow})
	tests := map[string]struct {
		change      func(s *synapse.Snapshot)
		significant bool
	}{
		"positions move": {func(s *synapse.Snapshot) {
			s.Streams[0].Writers[0].Position = 200
			s.Streams[0].Writers[0].LastAdvanceAt = statusNow
			s.Streams[0].Spread = 110
		}, false},
		"buffers and message times move": {func(s *synapse.Snapshot) {
			s.Redis.Clients[0].OutputBufferBytes = 2000
			s.LastMessageAt = statusNow
			s.LastSolicitAt = statusNow
		}, false},
		"a writer appears": {func(s *synapse.Snapshot) {
			s.Streams[1].Writers = append(s.Streams[1].Writers, synapse.Writer{Instance: "typing2", Announced: true})
		}, true},
		"a gap is counted": {func(s *synapse.Snapshot) { s.Streams[0].Writers[0].Gaps = 1 }, true},
		"a responder goes": {func(s *synapse.Snapshot) { s.Responders = s.Responders[1:] }, true},
		"unsubscribed":     {func(s *synapse.Snapshot) { s.Subscribed = false }, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			snap := healthySnapshot()
			tc.change(&snap)
			sr := testSynapseReplication()
			sr.Status = base
			next := SynapseStatus(sr, synapseObservation{haveSnap: true, snap: snap, now: statusNow})
			if got := synapseStatusSignificant(base, next); got != tc.significant {
				t.Errorf("significant = %v, want %v", got, tc.significant)
			}
		})
	}
}

func TestGapTracker(t *testing.T) {
	withGaps := func(n uint64) synapse.Snapshot {
		s := healthySnapshot()
		s.Streams[0].Writers[1].Gaps = n
		return s
	}
	ref := synapse.WriterRef{Stream: "events", Instance: "event_persister2"}
	var g gapTracker
	steps := []struct {
		snap   synapse.Snapshot
		after  time.Duration
		recent bool
	}{
		{withGaps(0), 0, false},
		{withGaps(1), time.Minute, true},
		{withGaps(1), gapWindow - time.Second, true},
		{withGaps(1), gapWindow + time.Minute, false},
		{withGaps(2), gapWindow + 2*time.Minute, true},
		// The watcher restarted: its counters start again.
		{withGaps(0), gapWindow + 3*time.Minute, false},
		{withGaps(1), gapWindow + 4*time.Minute, true},
	}
	for i, s := range steps {
		var recent []synapse.WriterRef
		g, recent = g.update(s.snap, statusNow.Add(s.after))
		got := len(recent) == 1 && recent[0] == ref
		if got != s.recent || (!s.recent && len(recent) != 0) {
			t.Errorf("step %d (gaps at +%s): recent = %v, want gap on %v: %v", i, s.after, recent, ref, s.recent)
		}
	}
}

func TestEmitConditionChanges(t *testing.T) {
	cond := func(typ string, st metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: "m"}
	}
	tests := map[string]struct {
		before, after []metav1.Condition
		want          []string
	}{
		"starting up is not news": {
			after: []metav1.Condition{cond("Ready", "False", replv1.ReasonWatcherPending), cond("WritersHealthy", "Unknown", replv1.ReasonWritersUnknown), cond("Degraded", "False", replv1.ReasonAsExpected)},
		},
		"subscribed and a missing writer": {
			before: []metav1.Condition{cond("Ready", "False", replv1.ReasonWatcherPending), cond("WritersHealthy", "Unknown", replv1.ReasonWritersUnknown)},
			after:  []metav1.Condition{cond("Ready", "True", replv1.ReasonSubscribed), cond("WritersHealthy", "False", replv1.ReasonMissingWriter)},
			want:   []string{"Normal Subscribed", "Warning MissingWriter"},
		},
		"degraded is a warning when true": {
			before: []metav1.Condition{cond("Degraded", "False", replv1.ReasonAsExpected)},
			after:  []metav1.Condition{cond("Degraded", "True", replv1.ReasonOutputBufferHigh)},
			want:   []string{"Warning OutputBufferHigh"},
		},
		"a missing secret at once": {
			after: []metav1.Condition{cond("Ready", "False", replv1.ReasonSecretNotFound)},
			want:  []string{"Warning SecretNotFound"},
		},
		"unchanged": {
			before: []metav1.Condition{cond("Ready", "True", replv1.ReasonSubscribed)},
			after:  []metav1.Condition{cond("Ready", "True", replv1.ReasonSubscribed)},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rec := &recordingEvents{}
			emitConditionChanges(rec, testSynapseReplication(), tc.before, tc.after)
			if strings.Join(rec.events, ";") != strings.Join(tc.want, ";") {
				t.Errorf("events = %v, want %v", rec.events, tc.want)
			}
		})
	}
}

// recordingEvents is an events.EventRecorder that keeps "type reason".
type recordingEvents struct {
	events []string
}

func (r *recordingEvents) Eventf(_, _ runtime.Object, eventtype, reason, _, _ string, _ ...any) {
	r.events = append(r.events, eventtype+" "+reason)
}
