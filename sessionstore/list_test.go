package sessionstore

import (
	"context"
	"slices"
	"testing"
)

func TestListPagesAndFilters(t *testing.T) {
	f := setup(t, 3, nil)
	data, empty := poolFixture(t, f, HandlerMemcache, 5, 3)
	all := slices.Concat(data, empty)
	slices.Sort(all)
	var got []string
	after := ""
	for range 10 {
		page, more, err := f.s.List(context.Background(), ListQuery{Limit: 3, After: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range page {
			got = append(got, l.ID)
			if len(l.Nodes) != 3 || l.TTL < 1000 {
				t.Errorf("%+v: want on 3 nodes with PHP's TTL", l)
			}
		}
		if !more {
			break
		}
		after = page[len(page)-1].ID
	}
	if !slices.Equal(got, all) {
		t.Errorf("pages of 3: %v, want %v", got, all)
	}
	page, _, err := f.s.List(context.Background(), ListQuery{MinBytes: 1, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(data)
	if got := ids(page); !slices.Equal(got, data) {
		t.Errorf("min_bytes 1: %v, want %v", got, data)
	}
}

func ids(l []Listed) []string {
	var out []string
	for _, x := range l {
		out = append(out, x.ID)
	}
	return out
}
