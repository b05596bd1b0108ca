package alerts

import "testing"

// TestScrapeLabels checks the scrape simulation the rule tests rely on:
// honor_labels keeps a metric's own label, its absence moves it to
// exported_<name>.
func TestScrapeLabels(t *testing.T) {
	target := map[string]string{"job": "op-metrics", "namespace": "op-system"}
	tests := map[string]struct {
		series string
		honor  bool
		want   string
	}{
		"honored namespace stays": {
			series: `m{namespace="team",master="a"}`, honor: true,
			want: `m{job="op-metrics",master="a",namespace="team"}`,
		},
		"unhonored namespace is renamed": {
			series: `m{namespace="team"}`,
			want:   `m{exported_namespace="team",job="op-metrics",namespace="op-system"}`,
		},
		"a bare name gets the target's labels": {
			series: `up`, honor: true,
			want: `up{job="op-metrics",namespace="op-system"}`,
		},
		"escaped quotes and spaces survive": {
			series: ` m { a = "x\"y" , b="z" } `, honor: true,
			want: `m{a="x\"y",b="z",job="op-metrics",namespace="op-system"}`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := scrapeTarget{labels: target, honorLabels: tc.honor}.scrape(tc.series)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	for name, bad := range map[string]string{
		"unterminated value": `m{a="x}`,
		"unquoted value":     `m{a=x}`,
		"no closing brace":   `m{a="x"`,
		"bad metric name":    `1m{a="x"}`,
		"no metric name":     `{a="x"}`,
	} {
		t.Run("refuses "+name, func(t *testing.T) {
			if got, err := (scrapeTarget{labels: target}).scrape(bad); err == nil {
				t.Errorf("scrape(%q) = %q, want an error", bad, got)
			}
		})
	}
}
