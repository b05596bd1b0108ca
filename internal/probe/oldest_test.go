package probe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestFetchOldestTokens(t *testing.T) {
	tests := map[string]struct {
		status int
		body   string
		want   map[string]int64
		fails  bool
	}{
		"tokens": {
			status: http.StatusOK,
			body:   `{"serverName":"x","streams":[{"name":"events","token":9,"oldestToken":3},{"name":"typing","token":0,"oldestToken":1}]}`,
			want:   map[string]int64{"events": 3, "typing": 1},
		},
		"a stream the log could not report is left out": {
			status: http.StatusOK,
			body:   `{"streams":[{"name":"events","token":9,"oldestToken":3},{"name":"caches","error":"disk"}]}`,
			want:   map[string]int64{"events": 3},
		},
		"an error status": {status: http.StatusNotFound, body: `404 page not found`, fails: true},
		"not JSON":        {status: http.StatusOK, body: `<html>`, fails: true},
		"no streams":      {status: http.StatusOK, body: `{"serverName":"x"}`, fails: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				if r.URL.Path != streamsPath {
					http.NotFound(rw, r)
					return
				}
				rw.WriteHeader(tc.status)
				_, _ = rw.Write([]byte(tc.body))
			}))
			defer srv.Close()
			got, err := fetchOldestTokens(context.Background(), srv.Client(), srv.URL+"/")
			if tc.fails {
				if !errors.Is(err, ErrHTTPUnreachable) {
					t.Fatalf("err = %v, want one wrapping ErrHTTPUnreachable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("oldest = %v, want %v", got, tc.want)
			}
		})
	}
}
