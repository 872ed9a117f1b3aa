package wxphone

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestMemoryTokenStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewMemoryTokenStore()
	base := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	tok := func(v string, h int) Token { return Token{Value: v, ExpiresAt: base.Add(time.Duration(h) * time.Hour)} }
	if _, err := s.LoadToken(ctx, "a"); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("LoadToken(empty) = %v", err)
	}
	steps := []struct {
		store Token
		want  Token // stored afterwards
	}{
		{tok("T1", 2), tok("T1", 2)},
		{tok("T0", 1), tok("T1", 2)},  // older: refused
		{tok("T1b", 2), tok("T1", 2)}, // same expiry: refused
		{tok("T2", 3), tok("T2", 3)},  // newer: stored
		{tok("T1", 2), tok("T2", 3)},  // a stalled writer of T1: refused
	}
	for i, st := range steps {
		got, err := s.StoreToken(ctx, "a", st.store)
		if err != nil || got != st.want {
			t.Errorf("step %d: StoreToken(%v) = %v, %v; want %v", i, st.store, got, err, st.want)
		}
	}
	if got, err := s.LoadToken(ctx, "a"); err != nil || got != tok("T2", 3) {
		t.Errorf("LoadToken = %v, %v", got, err)
	}
	if _, err := s.LoadToken(ctx, "b"); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("app b sees app a's token: %v", err)
	}
	if ok, _ := s.DeleteToken(ctx, "a", "T1"); ok {
		t.Error("DeleteToken(T1) deleted T2")
	}
	if ok, _ := s.DeleteToken(ctx, "b", "T2"); ok {
		t.Error("DeleteToken on app b deleted app a's token")
	}
	if ok, _ := s.DeleteToken(ctx, "a", ""); ok {
		t.Error("DeleteToken(\"\") deleted")
	}
	if ok, _ := s.DeleteToken(ctx, "a", "T2"); !ok {
		t.Error("DeleteToken(T2) did not delete")
	}
	if _, err := s.LoadToken(ctx, "a"); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("LoadToken after delete = %v", err)
	}
	// After a delete any token may be stored again.
	if got, _ := s.StoreToken(ctx, "a", tok("T1", 2)); got.Value != "T1" {
		t.Errorf("StoreToken after delete = %v", got)
	}
}

func TestMemoryTokenStoreForceReservations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewMemoryTokenStore()
	now := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC) // 18:00 UTC+8
	for i := range 10 {
		ok, after, err := s.ReserveForceRefresh(ctx, "a", newReservationID(), now, 30*time.Second, 10)
		if err != nil || !ok || after != 0 {
			t.Fatalf("reservation %d refused: %v %v %v", i, ok, after, err)
		}
		if ok, after, _ := s.ReserveForceRefresh(ctx, "a", newReservationID(), now.Add(29*time.Second), 30*time.Second, 10); ok || after != time.Second {
			t.Fatalf("reservation 29 s later: %v, %v; want refused for 1s", ok, after)
		}
		if ok, _, _ := s.ReserveForceRefresh(ctx, "b", newReservationID(), now, 30*time.Second, 10); !ok && i == 0 {
			t.Fatal("app b shares app a's budget")
		}
		now = now.Add(30 * time.Second)
	}
	ok, after, _ := s.ReserveForceRefresh(ctx, "a", newReservationID(), now, 30*time.Second, 10)
	midnight := time.Date(2024, 3, 1, 16, 0, 0, 0, time.UTC)
	if ok || after != midnight.Sub(now) {
		t.Fatalf("11th reservation: %v, %v; want refused until %v", ok, after, midnight)
	}
	if ok, _, _ := s.ReserveForceRefresh(ctx, "a", newReservationID(), midnight, 30*time.Second, 10); !ok {
		t.Error("refused after the UTC+8 midnight")
	}
}
