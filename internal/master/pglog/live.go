package pglog

// SetRetention replaces the retention of every stream, as a config reload
// does; the next retention pass (every TrimInterval, or ApplyRetention)
// applies it. Streams not in per use def. Rows already trimmed stay gone: a
// longer retention keeps more from now on.
func (l *Log) SetRetention(per map[string]Retention, def Retention) {
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	l.opts.Retention = per
	l.opts.DefaultRetention = def
}
