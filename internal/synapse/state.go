package synapse

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Counter keys of Snapshot.Commands besides the command names.
const (
	CountUnknown   = "UNKNOWN"
	CountMalformed = "MALFORMED"
)

// Limits bound what a watcher tracks, so that a channel flooded with random
// stream or instance names cannot grow its memory: commands naming a stream
// or instance beyond a limit are counted in Snapshot.Overflow and otherwise
// ignored. Zero fields take the defaults.
type Limits struct {
	// Streams is how many distinct streams are tracked (default 128;
	// Synapse has about 20).
	Streams int
	// Instances is how many distinct instances are tracked across all
	// streams (default 512).
	Instances int
	// NameBytes is the longest stream or instance name accepted (default
	// 256); longer names are counted as malformed.
	NameBytes int
}

func (l Limits) withDefaults() Limits {
	if l.Streams <= 0 {
		l.Streams = 128
	}
	if l.Instances <= 0 {
		l.Instances = 512
	}
	if l.NameBytes <= 0 {
		l.NameBytes = 256
	}
	return l
}

// tracker is the watcher's memory: per stream and writer, counters and
// positions, never rows. Not safe for concurrent use; the Watcher locks.
type tracker struct {
	serverName string
	expected   map[string][]string // nil: stream_writers unknown
	settle     time.Duration
	limits     Limits

	streams   map[string]*streamState
	instances map[string]*instanceState
	commands  map[string]uint64
	overflow  uint64

	lastMessageAt time.Time
	mainCommands  rateCounter
	userIPs       rateCounter

	// pendingReplicate is the oldest REPLICATE seen on the channel whose
	// answers are still arriving; settledReplicate the latest one whose
	// settle time has passed. Missing writers and responders are judged
	// against the settled one, so they do not flap while answers arrive.
	pendingReplicate time.Time
	settledReplicate time.Time
	// ownEchoes is how many of our own REPLICATEs are still to come back on
	// the subscription; they are not the deployment speaking.
	ownEchoes int
}

type streamState struct {
	writers map[string]*writerState
}

type instanceState struct {
	lastPositionAt time.Time
}

type writerState struct {
	announced     bool
	position      int64
	lastAdvanceAt time.Time
	lastSeenAt    time.Time
	rows          rateCounter
	commands      rateCounter
	gaps          uint64
	resets        uint64
	// resync is set when the watcher resubscribed: what it missed while
	// away is not the writer's gap.
	resync bool
}

// rateCounter counts events and turns them into a rate at every tick.
type rateCounter struct {
	total      uint64
	atLastTick uint64
	perSecond  float64
}

func (r *rateCounter) tick(elapsed time.Duration) {
	if elapsed <= 0 {
		return
	}
	r.perSecond = float64(r.total-r.atLastTick) / elapsed.Seconds()
	r.atLastTick = r.total
}

func newTracker(serverName string, expected map[string][]string, settle time.Duration, limits Limits) *tracker {
	t := &tracker{
		serverName: serverName,
		settle:     settle,
		limits:     limits.withDefaults(),
		streams:    make(map[string]*streamState),
		instances:  make(map[string]*instanceState),
		commands:   make(map[string]uint64),
	}
	if expected != nil {
		t.expected = make(map[string][]string, len(expected))
		for s, insts := range expected {
			sorted := slices.Clone(insts)
			slices.Sort(sorted)
			t.expected[s] = slices.Compact(sorted)
		}
	}
	return t
}

// errOverflow says a command was dropped because of Limits.
var errOverflow = errors.New("tracking limit reached")

// observe handles one message received on channel at now. The error, if
// any, says why the message was skipped or only counted; the tracker is
// consistent either way.
func (t *tracker) observe(channel, msg string, now time.Time) error {
	t.promote(now)
	cmd, err := Parse(msg)
	if errors.Is(err, ErrBlankMessage) {
		return nil
	}
	userIPChannel := channel != t.serverName
	if _, isReplicate := cmd.(Replicate); isReplicate && !userIPChannel {
		t.replicateSeen(now)
		if t.ownEchoes > 0 {
			t.ownEchoes--
			return nil
		}
	}
	t.lastMessageAt = now
	if userIPChannel {
		if _, ok := cmd.(UserIP); ok {
			t.userIPs.total++
		}
	} else {
		t.mainCommands.total++
	}
	switch {
	case errors.Is(err, ErrUnknownCommand):
		t.commands[CountUnknown]++
		return err
	case err != nil:
		t.commands[CountMalformed]++
		return err
	}
	switch c := cmd.(type) {
	case RData:
		if err := t.checkNames(c.Stream, c.Instance); err != nil {
			return err
		}
		t.commands[NameRData]++
		w, err := t.writer(c.Stream, c.Instance)
		if err != nil {
			return fmt.Errorf("RDATA %s %s: %w", truncate(c.Stream, 64), truncate(c.Instance, 64), err)
		}
		w.rows.total++
		w.commands.total++
		w.lastSeenAt = now
		if !c.Batch {
			w.moveTo(c.Token, now)
		}
	case Position:
		if err := t.checkNames(c.Stream, c.Instance); err != nil {
			return err
		}
		t.commands[NamePosition]++
		w, err := t.writer(c.Stream, c.Instance)
		if err != nil {
			return fmt.Errorf("POSITION %s %s: %w", truncate(c.Stream, 64), truncate(c.Instance, 64), err)
		}
		if inst := t.instances[c.Instance]; inst != nil {
			inst.lastPositionAt = now
		}
		w.commands.total++
		w.lastSeenAt = now
		if w.announced && !w.resync && c.PrevToken > w.position {
			w.gaps++
		}
		w.moveTo(c.NewToken, now)
	default:
		t.commands[cmd.Name()]++
	}
	return nil
}

func (t *tracker) checkNames(stream, instance string) error {
	if len(stream) > t.limits.NameBytes || len(instance) > t.limits.NameBytes {
		t.commands[CountMalformed]++
		return fmt.Errorf("%w: stream or instance name longer than %d bytes: %q %q", ErrMalformed, t.limits.NameBytes, truncate(stream, 64), truncate(instance, 64))
	}
	return nil
}

// moveTo records a numeric token from the writer: the position grows, or
// goes back when the writer restarted (a reset).
func (w *writerState) moveTo(token int64, now time.Time) {
	switch {
	case !w.announced:
		w.announced = true
		w.position = token
		w.lastAdvanceAt = now
	case token > w.position:
		w.position = token
		w.lastAdvanceAt = now
	case token < w.position:
		w.resets++
		w.position = token
	}
	w.resync = false
}

// writer finds or creates the state of instance on stream, within Limits.
// New names are cloned: the message they point into may be 1 MiB.
func (t *tracker) writer(stream, instance string) (*writerState, error) {
	s := t.streams[stream]
	if s == nil {
		if len(t.streams) >= t.limits.Streams {
			t.overflow++
			return nil, fmt.Errorf("%w: already tracking %d streams", errOverflow, t.limits.Streams)
		}
		s = &streamState{writers: make(map[string]*writerState)}
		t.streams[strings.Clone(stream)] = s
	}
	w := s.writers[instance]
	if w != nil {
		return w, nil
	}
	if _, known := t.instances[instance]; !known {
		if len(t.instances) >= t.limits.Instances {
			t.overflow++
			return nil, fmt.Errorf("%w: already tracking %d instances", errOverflow, t.limits.Instances)
		}
		t.instances[strings.Clone(instance)] = &instanceState{}
	}
	w = &writerState{}
	s.writers[strings.Clone(instance)] = w
	return w, nil
}

// replicateSeen notes a REPLICATE on the channel (ours or a process's):
// every process answers it, so it opens a settle window.
func (t *tracker) replicateSeen(now time.Time) {
	if t.pendingReplicate.IsZero() {
		t.pendingReplicate = now
	}
}

// promote settles the pending REPLICATE once its settle time has passed.
func (t *tracker) promote(now time.Time) {
	if !t.pendingReplicate.IsZero() && now.Sub(t.pendingReplicate) >= t.settle {
		t.settledReplicate = t.pendingReplicate
		t.pendingReplicate = time.Time{}
	}
}

// solicited notes that we published a REPLICATE that our own subscription
// will echo back.
func (t *tracker) solicited() { t.ownEchoes++ }

// resubscribed notes a new subscription: echoes of REPLICATEs published
// before it will never arrive, and tokens missed while away are not gaps.
func (t *tracker) resubscribed() {
	t.ownEchoes = 0
	for _, s := range t.streams {
		for _, w := range s.writers {
			w.resync = true
		}
	}
}

// tick turns counters into rates over elapsed.
func (t *tracker) tick(elapsed time.Duration) {
	t.mainCommands.tick(elapsed)
	t.userIPs.tick(elapsed)
	for _, s := range t.streams {
		for _, w := range s.writers {
			w.rows.tick(elapsed)
			w.commands.tick(elapsed)
		}
	}
}

// configured tells whether stream_writers (or Synapse's defaults) make
// instance a writer of stream.
func (t *tracker) configured(stream, instance string) bool {
	if stream == CachesStream {
		return true
	}
	if want, ok := t.expected[stream]; ok {
		_, found := slices.BinarySearch(want, instance)
		return found
	}
	return instance == MainInstance
}

// snapshot fills the tracker's part of a Snapshot.
func (t *tracker) snapshot(now time.Time, s *Snapshot) {
	t.promote(now)
	s.ServerName = t.serverName
	s.LastMessageAt = t.lastMessageAt
	s.Commands = maps.Clone(t.commands)
	s.Overflow = t.overflow
	s.CommandsPerSecond = t.mainCommands.perSecond
	s.UserIPPerSecond = t.userIPs.perSecond

	names := make([]string, 0, len(t.streams)+len(t.expected))
	for name := range t.streams {
		names = append(names, name)
	}
	for name := range t.expected {
		if _, seen := t.streams[name]; !seen {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	s.Streams = make([]Stream, 0, len(names))
	for _, name := range names {
		s.Streams = append(s.Streams, t.streamSnapshot(name))
	}

	reference := t.settledReplicate
	if reference.IsZero() {
		reference = t.pendingReplicate
	}
	s.Responders = []string{}
	if !reference.IsZero() {
		for name, inst := range t.instances {
			if !inst.lastPositionAt.Before(reference) {
				s.Responders = append(s.Responders, name)
			}
		}
		slices.Sort(s.Responders)
	}

	s.MissingWriters, s.UnexpectedWriters = nil, nil
	if t.expected == nil {
		return
	}
	for _, st := range s.Streams {
		want, judged := t.expected[st.Name]
		if !judged {
			continue
		}
		for _, w := range st.Writers {
			_, isWanted := slices.BinarySearch(want, w.Instance)
			switch {
			case isWanted && !t.settledReplicate.IsZero() && w.LastSeenAt.Before(t.settledReplicate):
				s.MissingWriters = append(s.MissingWriters, WriterRef{Stream: st.Name, Instance: w.Instance})
			case !isWanted && w.Announced:
				s.UnexpectedWriters = append(s.UnexpectedWriters, WriterRef{Stream: st.Name, Instance: w.Instance})
			}
		}
	}
}

func (t *tracker) streamSnapshot(name string) Stream {
	st := Stream{Name: name, Writers: []Writer{}}
	seen := t.streams[name]
	instances := make([]string, 0)
	if seen != nil {
		for inst := range seen.writers {
			instances = append(instances, inst)
		}
	}
	for _, inst := range t.expected[name] {
		if seen == nil || seen.writers[inst] == nil {
			instances = append(instances, inst)
		}
	}
	slices.Sort(instances)
	first := true
	for _, inst := range instances {
		w := Writer{Instance: inst, Configured: t.configured(name, inst)}
		if seen != nil {
			if ws := seen.writers[inst]; ws != nil {
				w.Announced = ws.announced
				w.Position = ws.position
				w.LastAdvanceAt = ws.lastAdvanceAt
				w.LastSeenAt = ws.lastSeenAt
				w.RowsPerSecond = ws.rows.perSecond
				w.CommandsPerSecond = ws.commands.perSecond
				w.Gaps = ws.gaps
				w.Resets = ws.resets
			}
		}
		st.Writers = append(st.Writers, w)
		if !w.Announced {
			continue
		}
		if first || w.Position < st.MinPosition {
			st.MinPosition = w.Position
		}
		if first || w.Position > st.MaxPosition {
			st.MaxPosition = w.Position
		}
		first = false
	}
	st.Spread = st.MaxPosition - st.MinPosition
	return st
}
