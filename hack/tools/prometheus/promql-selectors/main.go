// Command promql-selectors parses PromQL expressions with Prometheus's own
// parser and prints the series selectors each one uses, so that tests in
// the main module (test/monitoring checks the chart's Grafana dashboard)
// can check queries against the metrics the code registers without the
// Prometheus module among the product's dependencies.
//
// Input (stdin): a JSON array of expressions. Output (stdout): a JSON array
// with, per expression, its parse error or its selectors: the metric name
// and every label matcher.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type matcher struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

type selector struct {
	// Name is the metric name: the selector's name, or the value of an
	// equality matcher on __name__; empty when neither names one.
	Name     string    `json:"name"`
	Matchers []matcher `json:"matchers"`
}

type result struct {
	Expr      string     `json:"expr"`
	Error     string     `json:"error,omitempty"`
	Selectors []selector `json:"selectors,omitempty"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintf(os.Stderr, "promql-selectors: read a JSON array of expressions on stdin: %v\n", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	out := make([]result, 0, len(exprs))
	for _, e := range exprs {
		out = append(out, inspect(p, e))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "promql-selectors: %v\n", err)
		os.Exit(1)
	}
}

func inspect(p parser.Parser, e string) result {
	r := result{Expr: e}
	expr, err := p.ParseExpr(e)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		s := selector{Name: vs.Name}
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type == labels.MatchEqual {
					s.Name = m.Value
				}
				if vs.Name != "" {
					// The parser adds the name as a matcher; it is
					// s.Name already.
					continue
				}
			}
			s.Matchers = append(s.Matchers, matcher{Name: m.Name, Type: m.Type.String(), Value: m.Value})
		}
		r.Selectors = append(r.Selectors, s)
		return nil
	})
	return r
}
