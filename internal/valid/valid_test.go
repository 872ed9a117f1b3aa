package valid

import "testing"

func TestPrintable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", -1}, {"abc~!", -1}, {"a b", 1}, {"\x7f", 0}, {"ab\n", 2}, {"é", 0}, {"x\x00", 1},
	} {
		if got := Unprintable(tc.in); got != tc.want {
			t.Errorf("Unprintable(%q) = %d, want %d", tc.in, got, tc.want)
		}
		if Printable(tc.in) != (tc.want < 0) {
			t.Errorf("Printable(%q) disagrees with Unprintable", tc.in)
		}
	}
}

func TestAppID(t *testing.T) {
	long := ""
	for range MaxAppIDLen {
		long += "a"
	}
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"wx4f4bc4dec97d474b", true}, {"wx_demo-1", true}, {long, true}, {long + "a", false},
		{"", false}, {"wx 1", false}, {"wx{1}", false}, {"wx|1", false}, {"wx.1", false}, {"wx\n", false},
	} {
		if got := AppID(tc.in); got != tc.want {
			t.Errorf("AppID(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
