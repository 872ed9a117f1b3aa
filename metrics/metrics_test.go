package metrics

import (
	"errors"
	"fmt"
	"testing"

	"github.com/wxphone/wxphone"
)

func TestErrcodeLabel(t *testing.T) {
	for _, c := range []struct {
		ev   wxphone.UpstreamEvent
		want string
	}{
		{wxphone.UpstreamEvent{}, "0"},
		{wxphone.UpstreamEvent{ErrCode: 40029, Err: &wxphone.APIError{ErrCode: 40029}}, "40029"},
		{wxphone.UpstreamEvent{ErrCode: -1, Err: &wxphone.APIError{ErrCode: -1}}, "-1"},
		{wxphone.UpstreamEvent{ErrCode: 987654, Err: &wxphone.APIError{ErrCode: 987654}}, "other"},
		{wxphone.UpstreamEvent{Err: fmt.Errorf("wrapped: %w", &wxphone.TransportError{Op: wxphone.OpPhoneNumber, Err: errors.New("reset")})}, "transport"},
		{wxphone.UpstreamEvent{Status: 502, Err: &wxphone.HTTPError{Op: wxphone.OpPhoneNumber, StatusCode: 502}}, "http_5xx"},
		{wxphone.UpstreamEvent{Status: 404, Err: &wxphone.HTTPError{Op: wxphone.OpPhoneNumber, StatusCode: 404}}, "http_4xx"},
		{wxphone.UpstreamEvent{Err: &wxphone.DecodeError{Op: wxphone.OpPhoneNumber, Reason: "empty body"}}, "malformed"},
		{wxphone.UpstreamEvent{Err: errors.New("something else")}, "other"},
	} {
		if got := ErrcodeLabel(c.ev); got != c.want {
			t.Errorf("ErrcodeLabel(%+v) = %q, want %q", c.ev, got, c.want)
		}
	}
}

// TestErrcodeLabelOfASuccessAllocatesNothing: it runs on every upstream
// call.
func TestErrcodeLabelOfASuccessAllocatesNothing(t *testing.T) {
	ev := wxphone.UpstreamEvent{Op: wxphone.OpPhoneNumber, Status: 200}
	if n := testing.AllocsPerRun(100, func() { _ = ErrcodeLabel(ev) }); n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}
