package budget

import (
	"strings"
	"testing"
	"time"
)

func TestForce(t *testing.T) {
	t.Parallel()
	day := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	ny := time.FixedZone("EST", -5*3600)
	tests := []struct {
		name     string
		now      time.Time
		last     time.Time
		countDay string
		count    int
		ok       bool
		after    time.Duration
	}{
		{"first ever", day("2024-03-01T10:00:00Z"), time.Time{}, "", 0, true, 0},
		{"29s after the last", day("2024-03-01T10:00:29Z"), day("2024-03-01T10:00:00Z"), "2024-03-01", 1, false, time.Second},
		{"exactly 30s after", day("2024-03-01T10:00:30Z"), day("2024-03-01T10:00:00Z"), "2024-03-01", 1, true, 0},
		{"one below the limit", day("2024-03-01T10:00:00Z"), time.Time{}, "2024-03-01", 9, true, 0},
		{"at the limit", day("2024-03-01T10:00:00Z"), time.Time{}, "2024-03-01", 10, false, 6 * time.Hour},
		{"above the limit", day("2024-03-01T10:00:00Z"), time.Time{}, "2024-03-01", 11, false, 6 * time.Hour},
		{"limit reached yesterday", day("2024-03-01T10:00:00Z"), time.Time{}, "2024-02-29", 10, true, 0},
		// 15:59:59Z is 23:59:59 in UTC+8; 16:00:00Z is the next WeChat day
		// although the UTC date has not changed.
		{"last second of the UTC+8 day", day("2024-03-01T15:59:59Z"), time.Time{}, "2024-03-01", 10, false, time.Second},
		{"first second of the next UTC+8 day", day("2024-03-01T16:00:00Z"), time.Time{}, "2024-03-01", 10, true, 0},
		{"UTC midnight is not the boundary", day("2024-03-02T00:00:00Z"), time.Time{}, "2024-03-02", 10, false, 16 * time.Hour},
		{"other local zone", day("2024-03-01T15:59:59Z").In(ny), time.Time{}, "2024-03-01", 10, false, time.Second},
		{"spacing across midnight", day("2024-03-01T16:00:10Z"), day("2024-03-01T15:59:50Z"), "2024-03-01", 10, false, 10 * time.Second},
		{"limit one", day("2024-03-01T10:00:00Z"), time.Time{}, "2024-03-01", 1, false, 6 * time.Hour},
	}
	for _, tt := range tests {
		ok, after := Force(tt.now, tt.last, tt.countDay, tt.count, 30*time.Second, map[bool]int{true: 1, false: 10}[strings.HasPrefix(tt.name, "limit one")])
		if ok != tt.ok || after != tt.after {
			t.Errorf("%s: Force = %v, %v; want %v, %v", tt.name, ok, after, tt.ok, tt.after)
		}
	}
	if got := Day(day("2024-03-01T16:00:00Z")); got != "2024-03-02" {
		t.Errorf("Day = %s", got)
	}
}
